"""torch's CPU threads wait passively by default: ``OMP_WAIT_POLICY=PASSIVE``, set when detect_ft is imported.

torch's intra-op threads (GNU OpenMP in the Linux wheels) spin for a while at the end of every parallel
op before they sleep. With another busy process on the cores, a spinning thread holds a core that the
thread it waits for needs: with one busy process on 2 cores, training kept 0.4 of its quiet speed;
with threads that sleep at once 0.64-0.71, for about 8% less quiet speed (docs/benchmarks.md,
"Training under CPU contention"). The OpenMP runtime reads the policy once, when torch loads, so this
runs from ``detect_ft/__init__.py``, before detect-ft imports torch.
Nothing here imports torch at module level: the torch-free edge runtime imports this package too.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"


def apply_wait_policy_default() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already has a value (the user's stays).

    Returns whether it came too late for this process: torch was loaded already (its threads keep
    OpenMP's spinning default); processes started from here still get the passive policy.
    """
    if WAIT_POLICY in os.environ:
        return False
    os.environ[WAIT_POLICY] = "PASSIVE"
    return "torch" in sys.modules


MISSED = apply_wait_policy_default()


def late_import_note(device: str) -> str:
    """One line for a training run on the CPU (``device``: ``train.device``) when torch was imported
    before detect_ft and so spin-waits; '' otherwise (and with one intra-op thread, which waits for none)."""
    if not MISSED or device.startswith("cuda"):
        return ""
    import torch

    if torch.get_num_threads() == 1 or (device == "auto" and torch.cuda.is_available()):
        return ""
    return (
        "note: torch was imported before detect_ft, so its CPU threads spin-wait and training can run "
        "several times slower while other programs use the cores; import detect_ft first, or set "
        "OMP_WAIT_POLICY=PASSIVE before Python starts (docs/training.md, Speed)"
    )
