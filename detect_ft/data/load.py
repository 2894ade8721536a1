"""The one entry point that turns a config's data section into records: :func:`load_split`.

Trainer, evaluator and CLI call this (or :func:`detect_ft.data.split.load_checked_split`, which adds
the doctor's checks and policies); nothing else reads annotation files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from detect_ft.data.checks.findings import Finding
from detect_ft.data.formats.coco import load_coco
from detect_ft.data.formats.voc import load_voc
from detect_ft.data.formats.yolo import load_yolo
from detect_ft.data.paths import resolve
from detect_ft.data.records import DatasetRecords
from detect_ft.utils.errors import DataError


def _coco(
    root: Path, split: str, images: str, classes, keep_background, **options
) -> tuple[DatasetRecords, list[Finding]]:
    image_dir = resolve(root, images) if images else None
    return load_coco(resolve(root, split), image_dir, classes, keep_background, root=root, **options)


def _voc(
    root: Path, split: str, images: str, classes, keep_background, **options
) -> tuple[DatasetRecords, list[Finding]]:
    return load_voc(root, split, classes, keep_background, **options)


def _yolo(
    root: Path, split: str, images: str, classes, keep_background, **options
) -> tuple[DatasetRecords, list[Finding]]:
    return load_yolo(root, split, classes, keep_background, **options)


FORMATS: dict[str, Callable[..., tuple[DatasetRecords, list[Finding]]]] = {
    "coco": _coco,
    "voc": _voc,
    "yolo": _yolo,
}


def load_split(
    *,
    format: str,
    root: str | os.PathLike,
    split: str,
    images: str = "",
    classes: Optional[list[str]] = None,
    keep_background: bool = True,
    allow_outside_root: bool = False,
    apply_orientation: bool = True,
) -> tuple[DatasetRecords, list[Finding]]:
    """Load one split of a dataset without touching the image pixels.

    Args:
        format: ``coco``, ``voc`` or ``yolo``.
        root: dataset folder; relative ``split`` and ``images`` paths are resolved against it.
        split: the config value (data.train / data.val): coco: annotation JSON; voc: split name or list
            file; yolo: split folder or list file.
        images: coco only: folder the JSON's ``file_name`` entries are relative to (default: the JSON's
            folder).
        classes: user class list (label k = classes[k-1]); None or empty: the dataset's own names. Pass
            the training split's ``class_names`` when loading validation data so labels agree.
        keep_background: keep images without boxes.
        allow_outside_root: keep images whose annotated path is absolute or leaves ``root`` (COCO: or
            the ``images`` folder); by default they are left out, with an ``outside_root`` finding,
            before their files are opened.
        apply_orientation: the frame of EXIF-tagged images: rotated as tagged (True) or as stored;
            sizes read from headers use it and the records carry it to the decoder.

    Returns:
        ``(records, findings)``: boxes float32 xyxy in absolute pixels; findings are problems found
        while reading (unknown classes, unreadable images whose size was needed, paths outside the
        root); boxes and images they name are already left out of the records (outside-root images
        are kept when allowed). Problems in the records themselves (sizes, boxes) are found by
        :mod:`detect_ft.data.checks.doctor`.

    Raises:
        DataError: unknown format, empty split, missing or malformed annotation files.
    """
    if format not in FORMATS:
        raise DataError(f"data.format '{format}' is not supported; use one of {', '.join(FORMATS)}")
    if not split:
        raise DataError("no split given: set data.train / data.val to the split (file, folder or name)")
    root = Path(root or ".").expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder; fix data.root (relative paths start at the current folder)")
    records, findings = FORMATS[format](
        root,
        split,
        images,
        classes or None,
        keep_background,
        allow_outside_root=allow_outside_root,
        apply_orientation=apply_orientation,
    )
    if not records.class_names:
        raise DataError(f"{records.source}: the dataset has no classes; set data.classes or add annotations")
    if not records.records and not findings:
        raise DataError(f"{records.source}: the split holds no images; check data.root and the split")
    return records, findings
