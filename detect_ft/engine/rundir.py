"""Where a training run writes: never over another run, unless asked to.

``output.dir`` names the run directory. When it already holds files (an earlier run, or anything else),
a new run goes to the first free numbered sibling (``runs/x`` -> ``runs/x-2``, ``runs/x-3`` ...) and says
so, so that no checkpoint, metrics file or plot of the earlier run is replaced and ``best.pt`` and
``last.pt`` always come from one run. ``train.resume`` (``auto`` or a checkpoint) continues in
``output.dir`` itself; ``output.overwrite=true`` reuses it, after removing the files an earlier run wrote
there (checkpoints, metrics, plots, TensorBoard events, its MLflow run record ``mlflow.json``, the plots of
its evaluations; nothing else).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Optional

from detect_ft.utils.errors import ConfigError

# What a run writes into its directory; output.overwrite removes these and only these.
# mlflow.json too: an untracked rerun must not leave the replaced run's MLflow record for exports to add to.
RUN_FILES = (
    "metrics.jsonl",
    "mlflow.json",
    "checkpoints/best.pt",
    "checkpoints/last.pt",
    "plots/loss.png",
    "plots/map.png",
)
RUN_GLOBS = (
    "checkpoints/.*.tmp",
    "tensorboard/events.out.tfevents.*",
    "eval*/pr_curves.png",
    "eval*/confusion_matrix.png",
)  # the last two: `detect-ft eval` plots of the replaced run


def is_empty_or_missing(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


class ChosenRunDir(NamedTuple):
    """The run directory, the line to print when it is not ``output.dir`` (or None), and the folders
    :func:`choose_run_dir` created for it, deepest first (what :func:`remove_unused` may take back)."""

    path: Path
    note: Optional[str]
    created: tuple[Path, ...]


def choose_run_dir(output_dir: str | os.PathLike, *, resume: str, overwrite: bool) -> ChosenRunDir:
    """The directory this run writes to, created, and a line to print when it is not ``output_dir``.

    Args:
        resume: ``train.resume``; non-empty means "continue in ``output_dir``".
        overwrite: ``output.overwrite``; replace an earlier run in ``output_dir``.

    Raises:
        ConfigError: ``output_dir`` is a file, lies under a file, or cannot be created (read-only
            storage, no permission).
    """
    wanted = Path(output_dir)
    if wanted.exists() and not wanted.is_dir():
        raise ConfigError(f"config key 'output.dir': {wanted} is a file, not a folder; set output.dir to a folder")
    if resume or is_empty_or_missing(wanted):
        return ChosenRunDir(wanted, None, _make_dirs(wanted))
    if overwrite:
        removed = clear_run_files(wanted)
        note = f"output.overwrite=true: replacing the run in {wanted}" + (
            f" ({removed} files removed)" if removed else ""
        )
        return ChosenRunDir(wanted, note, ())
    k = 2
    while True:
        candidate = wanted.with_name(f"{wanted.name}-{k}")
        try:
            candidate.mkdir()  # claims the name: two runs started at once get different ones
            created: tuple[Path, ...] = (candidate,)
            break
        except FileExistsError:
            if candidate.is_dir() and is_empty_or_missing(candidate):
                created = ()
                break
            k += 1
        except OSError as exc:
            raise _cannot_create(wanted, candidate, exc) from None
    note = (
        f"output.dir {wanted} already holds files; this run writes to {candidate} instead (train.resume=auto "
        f"continues the run in {wanted}, output.overwrite=true replaces it)"
    )
    return ChosenRunDir(candidate, note, created)


def _make_dirs(path: Path) -> tuple[Path, ...]:
    """``mkdir -p path``; the folders it created, deepest first."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_create(path, path, exc) from None
    return tuple(missing)


def _cannot_create(wanted: Path, folder: Path, exc: OSError) -> ConfigError:
    under_file = next((parent for parent in folder.parents if parent.is_file()), None)
    why = f"{under_file} is a file, not a folder" if under_file else (exc.strerror or type(exc).__name__).lower()
    given = f" (output.dir is {wanted})" if folder != wanted else ""
    return ConfigError(
        f"config key 'output.dir': cannot create the run folder {folder} ({why}){given}; set output.dir to a "
        "folder you can write to"
    )


def remove_unused(created: tuple[Path, ...]) -> None:
    """Remove the folders a run created (``ChosenRunDir.created``) that are still empty, deepest first:
    a run refused before it wrote anything leaves no empty run directory behind. Nothing else is touched."""
    for folder in created:
        try:
            folder.rmdir()  # fails on a folder that is not empty, which is then kept with all above it
        except OSError:
            return


def clear_run_files(run_dir: Path) -> int:
    """Remove what an earlier run wrote into ``run_dir`` (see ``RUN_FILES``); return how many files."""
    removed = 0
    targets = [run_dir / name for name in RUN_FILES] + [p for pattern in RUN_GLOBS for p in run_dir.glob(pattern)]
    for path in targets:
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
    return removed
