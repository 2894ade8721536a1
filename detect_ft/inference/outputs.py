"""What ``predict`` may write into its output folder: the files it wrote there itself, and new ones.

An output folder may hold the user's own files (a photo named like an input, a hand-labelled dataset in
``DIR/dataset``). ``predict`` records every file it writes in ``DIR/predict-files.json``; a later run
into the same folder replaces those, and refuses, before writing anything, when any other existing
file is in the way, naming it. Torch-free (json and pathlib).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from detect_ft.inference.results import dataset_targets, existing_targets
from detect_ft.inference.sources import is_video
from detect_ft.utils.atomic_io import write_json_atomic
from detect_ft.utils.errors import DetectFTError

MANIFEST = "predict-files.json"
WRITTEN_BY = "detect-ft predict"
MAX_MANIFEST_BYTES = 64 << 20  # a few million file names; a larger file is not one predict wrote


def annotated_name(name: str) -> str:
    """The file name of an input image's annotated copy: the same name, PNG for non-JPEG/PNG inputs."""
    return name if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") else f"{Path(name).stem}.png"


def planned_outputs(
    items: Sequence[Union[Path, np.ndarray]], output: Path, save_format: Optional[str]
) -> list[tuple[Path, Optional[Path]]]:
    """``(target, source)`` for every file predicting ``items`` (:func:`detect_ft.inference.sources.expand_source`)
    into ``output`` writes, as far as it is known beforehand: annotated copies, ``<video>.pred.mp4``,
    ``predictions.json``, the dataset (``output/dataset``) and this record. In-memory images
    (``image_<n>.png``) are checked as they are written."""
    inputs = [p for p in items if isinstance(p, Path)]
    targets = [(output / (f"{p.stem}.pred.mp4" if is_video(p) else annotated_name(p.name)), None) for p in inputs]
    targets += [(output / "predictions.json", None), (output / MANIFEST, None)]
    if save_format:
        targets += dataset_targets(save_format, output / "dataset", "predictions", inputs)
    return targets


def read_manifest(output: Path) -> set[str]:
    """The files (relative POSIX paths) earlier runs recorded in ``output``; empty without a record.

    Raises:
        DetectFTError: ``output/predict-files.json`` exists but is not a record predict wrote.
    """
    path = output / MANIFEST
    if not path.is_file():
        return set()
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        record = json.loads(path.read_text(encoding="utf-8"))
        files = record["files"] if record.get("written_by") == WRITTEN_BY else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ValueError("not a predict record")
    except (OSError, ValueError, TypeError, AttributeError, KeyError, RecursionError):
        raise DetectFTError(
            f"{path} exists but is not the record of files detect-ft predict wrote there; move it away "
            "or choose another output folder"
        ) from None
    return set(files)


def write_manifest(output: Path, files: Iterable[str]) -> None:
    """Record ``files`` (relative POSIX paths) as written by predict into ``output``."""
    write_json_atomic(output / MANIFEST, {"written_by": WRITTEN_BY, "files": sorted(set(files))})


def relative(output: Path, target: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(output))).as_posix()


def check_owned(output: Path, targets: Sequence[tuple[Path, Optional[Path]]], owned: set[str]) -> None:
    """DetectFTError naming the first existing target (and how many more) that predict did not write."""
    taken = existing_targets(targets, [output / name for name in owned])
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise DetectFTError(
            f"predict would replace {taken[0]}{more}, which it did not write (it is not in {output / MANIFEST}); "
            "predict never replaces files it did not create: move it away or choose another output folder"
        )


def claim_outputs(output: Path, items: Sequence[Union[Path, np.ndarray]], save_format: Optional[str]) -> set[str]:
    """Check that predicting ``items`` into ``output`` replaces none but predict's own files
    (:func:`planned_outputs`, :func:`check_owned`), create the folder and record the planned files, all
    before any output is written (a run cut short leaves its files recorded as its own). Returns the
    recorded names, to which the caller adds in-memory images' as it writes them."""
    owned = read_manifest(output) if output.is_dir() else set()
    planned = planned_outputs(items, output, save_format)
    check_owned(output, planned, owned)
    make_output_folder(output)
    owned |= {relative(output, target) for target, _ in planned}
    write_manifest(output, owned)
    return owned


def check_output_folder(output: Path) -> None:
    """One line when ``output`` can never be the output folder (a file, under a file, a name the system
    refuses), before anything is checked or written; a missing folder is fine (it is made later)."""
    try:
        if os.stat(output) and not output.is_dir():
            raise DetectFTError(f"output {output} is a file, not a folder; choose a folder for the predictions")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _folder_error(output, exc) from None


def make_output_folder(output: Path) -> None:
    """Create ``output`` (and its parents); one line naming the obstacle when that is impossible."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _folder_error(output, exc) from None


def _folder_error(output: Path, exc: OSError) -> DetectFTError:
    if isinstance(exc, FileExistsError):
        return DetectFTError(f"output {output} is a file, not a folder; choose a folder for the predictions")
    if isinstance(exc, NotADirectoryError):
        blocker = next((p for p in output.parents if p.is_file()), output.parent)
        return DetectFTError(
            f"cannot create the output folder {output}: {blocker} is a file, not a folder; choose another output folder"
        )
    # read-only storage, no permission, a full disk, a name too long...
    return DetectFTError(
        f"cannot create the output folder {output} ({exc.strerror or exc}); choose a writable output folder"
    )
