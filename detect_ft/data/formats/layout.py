"""Where a written dataset's images go, and the guards every writer shares: only image files are copied
or linked, and nothing is written into the source annotations (``protect``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from detect_ft.data.image import IMAGE_SUFFIXES, read_image_info
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.utils.atomic_io import atomic_path
from detect_ft.utils.errors import DataError

ImageMode = Literal["copy", "symlink", "none"]


Protected = tuple  # paths (files or folders) no writer may write into: the source annotations


def check_image_file(source: str | os.PathLike) -> None:
    """DataError unless ``source`` is an existing image file (by suffix and by its header)."""
    source = Path(source)
    if not source.is_file():
        raise DataError(f"image file {source} does not exist; it cannot be copied")
    if source.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"{source} is named as an image by the annotations but is not one ({source.suffix or 'no'} "
            f"suffix; images end in {', '.join(IMAGE_SUFFIXES)}); refused to copy it"
        )
    try:
        read_image_info(source)
    except DataError as exc:
        raise DataError(f"{exc}; refused to copy it") from None


def guard(target: Path, protect: Protected) -> None:
    """DataError when ``target`` is (or is inside) one of the ``protect`` paths: the source annotations."""
    resolved = Path(os.path.abspath(target)).resolve()
    for path in protect:
        guarded = Path(os.path.abspath(path)).resolve()
        if resolved == guarded or guarded in resolved.parents:
            raise DataError(
                f"refusing to write {target}: it is part of the source annotations ({path}), which a conversion "
                "never changes; write the conversion to another folder (or under another split name)"
            )


def place_image(source: str | os.PathLike, target: Path, mode: ImageMode, protect: Protected = ()) -> None:
    """Put an image at ``target`` (copy or symlink); nothing when it is already there or mode is none.

    Only image files are placed (:func:`check_image_file`).
    """
    source = Path(source)
    if mode == "none" or (target.exists() and source.exists() and os.path.samefile(source, target)):
        return
    check_image_file(source)
    guard(target, protect)
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        target.unlink(missing_ok=True)
        target.symlink_to(source.resolve())
        return
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def output_name(file_name: str) -> str:
    """Where an image goes inside a written layout: its relative ``file_name``, or only the base name when
    ``file_name`` is absolute or climbs out with ``..`` (as COCO files written with images="none" do)."""
    path = Path(file_name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        return path.name
    return path.as_posix()


def progress(records: list[ImageRecord], what: str):
    """``records`` with a progress bar on a terminal (tqdm's ``disable=None``: never in logs or tests)."""
    from tqdm import tqdm

    return tqdm(records, desc=what, unit="img", disable=None, leave=False)


def check_unique_ids(records: DatasetRecords) -> None:
    counts: dict[int, int] = {}
    for record in records.records:
        counts[record.image_id] = counts.get(record.image_id, 0) + 1
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        raise DataError(f"{records.source}: image ids {repeated[:5]} repeat; COCO needs unique image ids")
