"""Pascal VOC adapter: ``Annotations/<id>.xml`` + ``JPEGImages/`` + ``ImageSets/Main/<split>.txt``.

VOC corners are 1-based pixel indices (a box covering the whole image is ``1..W``). They become
continuous xyxy as ``(xmin - 1, ymin - 1, xmax, ymax)``, so that box spans ``0..W``; the VOC writer in
:mod:`detect_ft.data.convert` applies the inverse. The ``difficult`` flag is kept.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np

from detect_ft.data.findings import UNKNOWN_CLASS, Finding
from detect_ft.data.paths import BACKGROUND_NAMES, resolve, size_or_finding
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.errors import DataError


def voc_split_ids(root: str | os.PathLike, split: str) -> tuple[list[str], Path]:
    """Image ids of a split and the list file they came from.

    ``split`` is a split name (``root/ImageSets/Main/<split>.txt``) or a path to a list file (relative to
    ``root``). Lines may carry a second column (VOC per-class lists); only the first token is the id.
    """
    candidate = resolve(root, split)
    if candidate.is_file():
        list_file = candidate
    else:
        list_file = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(
                f"VOC split '{split}': neither {candidate} nor {list_file} exists; set data.train/data.val to a "
                f"split name under {Path(root) / 'ImageSets' / 'Main'} or to a list file"
            )
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"VOC split list {list_file} is empty; add image ids, one per line")
    return ids, list_file


def parse_voc_xml(path: Path) -> dict:
    """One annotation file -> {filename, width, height, objects: [(name, [xmin, ymin, xmax, ymax], difficult)]}.

    Coordinates are returned as written (VOC 1-based corners); the caller converts them.
    """
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; fix the split list or add the file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataError(f"annotation file {path}: XML parse error at line {line} column {column}") from None
    size = root.find("size")
    width = _int_or_none(size.findtext("width") if size is not None else None)
    height = _int_or_none(size.findtext("height") if size is not None else None)
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"annotation file {path}: object {i} has no <name>; add the class name")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(f"annotation file {path}: object {i} ('{name}') has no <bndbox>")
        corners = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(tag)
            try:
                corners.append(float(text))
            except (TypeError, ValueError):
                raise DataError(f"annotation file {path}: object {i} <{tag}> must be a number, got {text!r}") from None
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        objects.append((name, corners, difficult))
    return {"filename": (root.findtext("filename") or "").strip(), "width": width, "height": height, "objects": objects}


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        value = int(float(text))  # some tools write "500.0"
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def load_voc(
    root: str | os.PathLike,
    split: str,
    classes: Optional[list[str]] = None,
    keep_background: bool = True,
) -> tuple[DatasetRecords, list[Finding]]:
    """Read a VOC split.

    Args:
        root: the VOC folder holding Annotations/, JPEGImages/ and ImageSets/Main/.
        split: split name or list file (see :func:`voc_split_ids`).
        classes: class list (label k = classes[k-1]); boxes of other names become ``unknown_class``
            findings. Without it, the names found in the split's XMLs, sorted.
        keep_background: keep images without objects.

    Returns:
        Records with boxes float32 xyxy in absolute pixels (0..W continuous), and findings.
    """
    root = Path(root)
    ids, list_file = voc_split_ids(root, split)
    parsed = [(image_id, parse_voc_xml(root / "Annotations" / f"{image_id}.xml")) for image_id in ids]
    if classes:
        names = list(classes)
    else:
        names = sorted({o[0] for _, p in parsed for o in p["objects"] if o[0].lower() not in BACKGROUND_NAMES})
    label_of = {name: i + 1 for i, name in enumerate(names)}

    records, findings = [], []
    for index, (image_id, ann) in enumerate(parsed):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        file_name = ann["filename"] or f"{image_id}.jpg"
        if not Path(file_name).suffix:
            file_name += ".jpg"
        image_path = root / "JPEGImages" / file_name
        width, height = ann["width"], ann["height"]
        if width is None or height is None:
            size, finding = size_or_finding(image_path)
            if finding is not None:
                findings.append(finding)
                continue
            width, height = size
        boxes, labels, difficult = [], [], []
        for i, (name, (xmin, ymin, xmax, ymax), is_difficult) in enumerate(ann["objects"]):
            box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
            if name not in label_of:
                why = (
                    f"class '{name}' would collide with the background label 0"
                    if name.lower() in BACKGROUND_NAMES
                    else f"class '{name}' is not in data.classes {names}"
                )
                findings.append(Finding(UNKNOWN_CLASS, str(xml_path), why, i, box))
                continue
            boxes.append(box)
            labels.append(label_of[name])
            difficult.append(is_difficult)
        if not boxes and not keep_background:
            continue
        records.append(
            ImageRecord(
                image_path=str(image_path),
                width=width,
                height=height,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=labels,
                difficult=difficult,
                image_id=index + 1,
                file_name=file_name,
            )
        )
    return DatasetRecords(records, names, source=str(list_file)), findings
