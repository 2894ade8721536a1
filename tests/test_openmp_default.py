"""detect-ft's OpenMP default: ``import detect_ft`` sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads
(so that torch's threads sleep instead of spinning against another busy process, docs/training.md
"Speed"), and never replaces a user's own value."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **env_vars: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose environment holds no OpenMP settings but ``env_vars``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(env_vars, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_import_detect_ft_sets_a_passive_wait_policy():
    done = _python("import detect_ft, os; print(os.environ.get('OMP_WAIT_POLICY'))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PASSIVE"


@pytest.mark.parametrize("value", ["ACTIVE", "passive", ""])
def test_a_users_wait_policy_is_kept(value):
    done = _python("import detect_ft, os; print(repr(os.environ.get('OMP_WAIT_POLICY')))", OMP_WAIT_POLICY=value)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(value)


def test_torch_imported_after_detect_ft_does_not_spin_and_training_says_nothing():
    # OMP_DISPLAY_ENV=VERBOSE makes GNU OpenMP print what it read when it loaded (with torch); its
    # spin count is 300000 under its own default and 0 under the passive policy.
    code = "import detect_ft, torch; from detect_ft.engine.openmp import late_import_note; print(repr(late_import_note('cpu')))"
    done = _python(code, OMP_DISPLAY_ENV="VERBOSE")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "''"
    shown = done.stdout + done.stderr
    if "GOMP_SPINCOUNT" not in shown:
        pytest.skip("this torch's OpenMP runtime is not GNU OpenMP")
    assert re.search(r"GOMP_SPINCOUNT\s*=\s*'0'", shown), shown


def test_torch_imported_first_gets_a_note_for_multithreaded_cpu_training():
    code = (
        "import torch, json, os\n"
        "from detect_ft.engine.openmp import late_import_note\n"
        "torch.set_num_threads(2)\n"
        "notes = [late_import_note('cpu'), late_import_note('cuda:0')]\n"
        "torch.set_num_threads(1)\n"
        "print(json.dumps([*notes, late_import_note('cpu'), os.environ['OMP_WAIT_POLICY']]))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    cpu, cuda, one_thread, for_children = json.loads(done.stdout.strip().splitlines()[-1])
    assert cpu.startswith("note: torch was imported before detect_ft") and "OMP_WAIT_POLICY=PASSIVE" in cpu
    assert "\n" not in cpu and cuda == "" and one_thread == ""
    assert for_children == "PASSIVE"  # processes started later (loader workers, torchrun) still get it


def test_no_note_when_the_user_chose_a_policy():
    code = "import torch; from detect_ft.engine.openmp import late_import_note; print(repr(late_import_note('cpu')))"
    done = _python(code, OMP_WAIT_POLICY="ACTIVE")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "''"
