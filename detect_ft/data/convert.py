"""Writing records in a format (:func:`write_split`) and converting a split between formats
(:func:`convert_split`). Each format's writer lives beside its reader in :mod:`detect_ft.data.formats`:
each writer is the inverse of its adapter. Annotation files are written atomically; images are copied
(or symlinked) into the new layout when the format needs them there.

Safety: only image files are copied or linked (a file an annotation names that is not an image is
refused before anything is written), images outside the source dataset are not read unless allowed
(see :func:`detect_ft.data.load.load_split`), and no writer ever writes over the source annotations
(``protect``): converting a dataset into its own folder fails instead of destroying it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from detect_ft.data.checks.findings import Finding
from detect_ft.data.formats.coco import write_coco
from detect_ft.data.formats.layout import ImageMode, Protected, check_image_file
from detect_ft.data.formats.voc import write_voc
from detect_ft.data.formats.yolo import write_yolo
from detect_ft.data.load import load_split
from detect_ft.data.paths import resolve
from detect_ft.data.records import DatasetRecords
from detect_ft.utils.errors import DataError


def write_split(
    records: DatasetRecords,
    format: str,
    out_dir: str | os.PathLike,
    name: str,
    images: ImageMode,
    protect: Protected = (),
) -> Path:
    """Write one split in ``format``: coco -> ``out_dir/<name>.json`` (+ ``images/``), yolo -> ``out_dir/<name>/``,
    voc -> ``out_dir`` with ``ImageSets/Main/<name>.txt``. Returns what to put in data.train/data.val.
    Nothing is written into ``protect`` (files or folders)."""
    out_dir = Path(out_dir)
    if format == "coco":
        return write_coco(records, out_dir / f"{name}.json", images=images, protect=protect)
    if format == "yolo":
        return write_yolo(records, out_dir, name, images=images, protect=protect)
    if format == "voc":
        write_voc(records, out_dir, name, images=images, protect=protect)
        return out_dir / "ImageSets" / "Main" / f"{name}.txt"
    raise DataError(f"cannot write format '{format}'; use one of coco, yolo, voc")


def convert_split(
    *,
    src_format: str,
    root: str | os.PathLike,
    split: str,
    dst_format: str,
    out_dir: str | os.PathLike,
    name: str,
    images: str = "",
    classes: Optional[list[str]] = None,
    image_mode: ImageMode = "copy",
    allow_outside_root: bool = False,
) -> tuple[Path, DatasetRecords, list[Finding]]:
    """Read a split with :func:`load_split` and write it in ``dst_format``.

    Boxes are written as loaded (no doctor policies: a conversion should not silently change data);
    the adapter's findings (e.g. unknown classes, whose boxes cannot be written, or images outside
    ``root`` unless ``allow_outside_root``) are returned. Every image to copy is checked to be an image
    file before anything is written, and the source annotations are never written over.
    """
    records, findings = load_split(
        format=src_format, root=root, split=split, images=images, classes=classes, allow_outside_root=allow_outside_root
    )
    if image_mode != "none":
        for record in records.records:
            check_image_file(record.image_path)
    protect = source_annotations(src_format, root, split, records)
    path = write_split(records, dst_format, out_dir, name, image_mode, protect)
    return path, records, findings


def source_annotations(format: str, root: str | os.PathLike, split: str, records: DatasetRecords) -> Protected:
    """The files and folders holding a split's annotations, which a conversion must not write into."""
    root = Path(root or ".")
    if format == "coco":
        return (resolve(root, split),)
    if format == "voc":
        from detect_ft.data.formats.voc import voc_split

        where = voc_split(root, split)
        return (where.xml_dir, where.source) + ((root / "ImageSets",) if where.source.is_file() else ())
    from detect_ft.data.formats.yolo import label_path_for

    where = resolve(root, split)
    names = [
        folder / name
        for folder in {where if where.is_dir() else where.parent, root}
        for name in ("data.yaml", "dataset.yaml", "classes.txt")
    ]
    labels = set()
    for record in records.records:
        labels.add(label_path_for(Path(record.image_path)).parent)
    if where.is_dir():
        labels.add(where / "labels")
    return (where, *names, *sorted(labels)) if where.is_file() else (*names, *sorted(labels))
