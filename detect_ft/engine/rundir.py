"""Where a training run writes: never over another run, unless asked to.

``output.dir`` names the run directory. When it already holds files (an earlier run, or anything else),
a new run goes to the first free numbered sibling (``runs/x`` -> ``runs/x-2``, ``runs/x-3`` ...) and says
so, so that no checkpoint, metrics file or plot of the earlier run is replaced and ``best.pt`` and
``last.pt`` always come from one run. ``train.resume`` (``auto`` or a checkpoint) continues in
``output.dir`` itself; ``output.overwrite=true`` reuses it, after removing the files an earlier run wrote
there (checkpoints, metrics, plots, TensorBoard events, the plots of its evaluations; nothing else).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

# What a run writes into its directory; output.overwrite removes these and only these.
RUN_FILES = ("metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt", "plots/loss.png", "plots/map.png")
RUN_GLOBS = (
    "checkpoints/.*.tmp",
    "tensorboard/events.out.tfevents.*",
    "eval*/pr_curves.png",
    "eval*/confusion_matrix.png",
)  # the last two: `detect-ft eval` plots of the replaced run


def is_empty_or_missing(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def choose_run_dir(output_dir: str | os.PathLike, *, resume: str, overwrite: bool) -> tuple[Path, Optional[str]]:
    """The directory this run writes to, created, and a line to print when it is not ``output_dir``.

    Args:
        resume: ``train.resume``; non-empty means "continue in ``output_dir``".
        overwrite: ``output.overwrite``; replace an earlier run in ``output_dir``.
    """
    wanted = Path(output_dir)
    if wanted.exists() and not wanted.is_dir():
        from detect_ft.errors import ConfigError

        raise ConfigError(f"config key 'output.dir': {wanted} is a file, not a folder; set output.dir to a folder")
    if resume or is_empty_or_missing(wanted):
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted, None
    if overwrite:
        removed = clear_run_files(wanted)
        note = f"output.overwrite=true: replacing the run in {wanted}" + (
            f" ({removed} files removed)" if removed else ""
        )
        return wanted, note
    k = 2
    while True:
        candidate = wanted.with_name(f"{wanted.name}-{k}")
        try:
            candidate.mkdir(parents=True)  # claims the name: two runs started at once get different ones
            break
        except FileExistsError:
            if candidate.is_dir() and is_empty_or_missing(candidate):
                break
            k += 1
    note = (
        f"output.dir {wanted} already holds files; this run writes to {candidate} instead (train.resume=auto "
        f"continues the run in {wanted}, output.overwrite=true replaces it)"
    )
    return candidate, note


def clear_run_files(run_dir: Path) -> int:
    """Remove what an earlier run wrote into ``run_dir`` (see ``RUN_FILES``); return how many files."""
    removed = 0
    targets = [run_dir / name for name in RUN_FILES] + [p for pattern in RUN_GLOBS for p in run_dir.glob(pattern)]
    for path in targets:
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
    return removed
