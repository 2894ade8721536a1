"""Pascal VOC adapter: ``Annotations/<id>.xml`` + ``JPEGImages/`` + ``ImageSets/Main/<split>.txt``, or a
split folder holding the images and their XML files side by side (Roboflow's VOC export, LabelImg's default).

VOC corners are 1-based pixel indices (a box covering the whole image is ``1..W``). They become
continuous xyxy as ``(xmin - 1, ymin - 1, xmax, ymax)``, so that box spans ``0..W``; the VOC writer in
:mod:`detect_ft.data.convert` applies the inverse. The ``difficult`` flag is kept.

The writer (:func:`write_voc`) is the adapter's inverse: integer corners ``(x1 + 1, y1 + 1, x2, y2)`` (the
adapter reads ``xmin - 1, ymin - 1, xmax, ymax``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import defusedxml.ElementTree as SafeET
import numpy as np
from defusedxml import DefusedXmlException

from detect_ft.data.checks.findings import UNKNOWN_CLASS, Finding
from detect_ft.data.formats.layout import ImageMode, Protected, guard, output_name, place_image, progress
from detect_ft.data.paths import (
    ImagePlacer,
    check_not_background,
    is_background_name,
    resolve,
)
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.utils.atomic_io import write_text_atomic
from detect_ft.utils.errors import DataError
from detect_ft.utils.limits import MAX_LIST_BYTES, MAX_XML_BYTES, check_size, read_text


@dataclass(frozen=True)
class VocSplit:
    """Where a split's annotations and images are: ``ids`` (XML file stems), ``source`` (the list file or
    the folder, for messages), ``xml_dir`` and ``image_dir``, and ``class_dirs``, the folders searched for a
    class name the split itself lacks (:func:`_check_classes_used`)."""

    ids: list[str]
    source: Path
    xml_dir: Path
    image_dir: Path
    class_dirs: tuple[Path, ...]


def voc_split(root: str | os.PathLike, split: str) -> VocSplit:
    """The split ``split`` names, relative to ``root``: a split name (``root/ImageSets/Main/<split>.txt``)
    or list file of ids, read against ``root/Annotations`` and ``root/JPEGImages``; or a folder holding
    the images and their ``.xml`` files side by side (a Roboflow VOC export, LabelImg's default). List
    lines may carry a second column (VOC per-class lists); only the first token is the id.
    """
    root = Path(root)
    candidate = resolve(root, split)
    list_file = candidate if candidate.is_file() else root / "ImageSets" / "Main" / f"{split}.txt"
    if list_file.is_file():
        return VocSplit(
            _list_ids(list_file), list_file, root / "Annotations", root / "JPEGImages", (root / "Annotations",)
        )
    if candidate.is_dir():
        ids = sorted(path.stem for path in candidate.glob("*.xml"))
        if not ids:
            raise DataError(
                f"VOC split '{split}': folder {candidate} holds no .xml annotation files; point data.train/data.val "
                f"at the folder of images and their XML files, or at a split name under {root / 'ImageSets' / 'Main'}"
            )
        siblings = tuple(sorted(p for p in candidate.parent.iterdir() if p.is_dir()))
        return VocSplit(ids, candidate, candidate, candidate, siblings)
    raise DataError(
        f"VOC split '{split}': neither {list_file} nor a folder {candidate} exists; set data.train/data.val to a "
        f"split name under {root / 'ImageSets' / 'Main'}, a list file, or a folder of images and their XML files"
    )


def _list_ids(list_file: Path) -> list[str]:
    text = read_text(list_file, MAX_LIST_BYTES, "VOC split list", DataError)
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"VOC split list {list_file} is empty; add image ids, one per line")
    for image_id in ids:
        if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise DataError(
                f"VOC split list {list_file}: id {image_id[:80]!r} is a path, not an image id (a file "
                "name without folder or suffix); fix the list"
            )
    return ids


def parse_voc_xml(path: Path) -> dict:
    """One annotation file -> {filename, width, height, objects: [(name, [xmin, ymin, xmax, ymax], difficult)]}.

    Coordinates are returned as written (VOC 1-based corners); the caller converts them.
    """
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; fix the split list or add the file")
    check_size(path, MAX_XML_BYTES, "annotation file", DataError)
    try:
        # forbid_dtd: VOC files never need a DOCTYPE, and refusing any one (not only those with entities)
        # keeps entity expansion (billion laughs) and external entities out before they are looked at
        root = SafeET.fromstring(path.read_bytes(), forbid_dtd=True)
    except DefusedXmlException:
        raise DataError(
            f"annotation file {path} declares a DOCTYPE or entities, which VOC annotations never need "
            "and detect-ft does not expand; remove the <!DOCTYPE ...> block"
        ) from None
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
    except (TypeError, ValueError, OverflowError):  # missing, not a number, inf
        return None
    return value if value > 0 else None


def load_voc(
    root: str | os.PathLike,
    split: str,
    classes: Optional[list[str]] = None,
    keep_background: bool = True,
    *,
    allow_outside_root: bool = False,
    apply_orientation: bool = True,
) -> tuple[DatasetRecords, list[Finding]]:
    """Read a VOC split.

    Args:
        root: the VOC folder holding Annotations/, JPEGImages/ and ImageSets/Main/ (or the split folders).
        split: split name, list file or folder of images and XML files (see :func:`voc_split`).
        classes: class list (label k = classes[k-1]); boxes of other names become ``unknown_class``
            findings. Without it, the names found in the split's XMLs, sorted. Each name must be used by
            some annotation of the dataset (this split, else any file in Annotations/ or, for a split
            folder, in the folders beside it), as COCO's
            categories must exist; a name meaning background is refused.
        keep_background: keep images without objects.
        allow_outside_root: keep images whose ``<filename>`` is absolute or leaves ``root`` (else they
            become ``outside_root`` findings and are left out, before their files are opened).
        apply_orientation: sizes read from image headers are in the EXIF-rotated frame (else stored).

    Returns:
        Records with boxes float32 xyxy in absolute pixels (0..W continuous), and findings.
    """
    root = Path(root)
    where = voc_split(root, split)
    parsed = [(image_id, parse_voc_xml(where.xml_dir / f"{image_id}.xml")) for image_id in where.ids]
    names = _voc_classes(where, parsed, classes)
    label_of = {name: i + 1 for i, name in enumerate(names)}

    placer = ImagePlacer([root], allow_outside_root, apply_orientation)
    records, findings = [], placer.findings
    for index, (image_id, ann) in enumerate(parsed):
        xml_path = where.xml_dir / f"{image_id}.xml"
        file_name = _file_name(image_id, ann)
        image_path = where.image_dir / file_name
        annotated = None if ann["width"] is None or ann["height"] is None else (ann["width"], ann["height"])
        size = placer.size(image_path, f"{xml_path}: <filename> {file_name!r}", annotated)
        if size is None:
            continue
        boxes, labels, difficult = _voc_boxes(ann["objects"], label_of, names, xml_path, findings)
        if not boxes and not keep_background:
            continue
        records.append(
            ImageRecord(
                image_path=str(image_path),
                width=size[0],
                height=size[1],
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=labels,
                difficult=difficult,
                image_id=index + 1,
                file_name=file_name,
                apply_orientation=apply_orientation,
            )
        )
    return DatasetRecords(records, names, source=str(where.source)), findings


def _file_name(image_id: str, ann: dict) -> str:
    """The image's file name: the XML's ``<filename>`` (else ``<id>.jpg``), ``.jpg`` added when it has no suffix."""
    file_name = ann["filename"] or f"{image_id}.jpg"
    return file_name if Path(file_name).suffix else file_name + ".jpg"


def _voc_classes(where: VocSplit, parsed: list[tuple[str, dict]], classes: Optional[list[str]]) -> list[str]:
    """The class names in label order: ``classes`` (checked: not background, each used by some
    annotation), else the non-background names of the split's objects, sorted."""
    if classes:
        check_not_background(list(classes), str(where.source))
        _check_classes_used(where, list(classes), {o[0] for _, p in parsed for o in p["objects"]})
        return list(classes)
    return sorted({o[0] for _, p in parsed for o in p["objects"] if not is_background_name(o[0])})


def _voc_boxes(
    objects: list, label_of: dict[str, int], names: list[str], xml_path: Path, findings: list[Finding]
) -> tuple[list[list[float]], list[int], list[bool]]:
    """Boxes (continuous xyxy, absolute pixels), labels and difficult flags of one file's objects;
    objects of other classes are appended to ``findings`` as ``unknown_class`` instead."""
    boxes, labels, difficult = [], [], []
    for i, (name, (xmin, ymin, xmax, ymax), is_difficult) in enumerate(objects):
        box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
        if name not in label_of:
            why = (
                f"class '{name}' is the background class (label 0) and cannot be a box label"
                if is_background_name(name)
                else f"class '{name}' is not in data.classes {names}"
            )
            findings.append(Finding(UNKNOWN_CLASS, str(xml_path), why, i, box))
            continue
        boxes.append(box)
        labels.append(label_of[name])
        difficult.append(is_difficult)
    return boxes, labels, difficult


def _check_classes_used(where: VocSplit, classes: list[str], used: set[str]) -> None:
    """DataError for names of ``classes`` that no annotation of the dataset uses.

    A typo in data.classes would otherwise train a class that never has a box. Names missing from the
    split are looked up in the rest of the dataset's XML files (``where.class_dirs``: a validation split
    may lack a class), stopping as soon as all are found; that scan happens only when the split lacks a name.
    """
    missing = [c for c in classes if c not in used]
    if not missing:
        return
    for path in (path for folder in where.class_dirs for path in sorted(folder.glob("*.xml"))):
        try:
            names = {o[0] for o in parse_voc_xml(path)["objects"]}
        except DataError:
            continue  # a broken file outside this split is not this split's problem
        missing = [c for c in missing if c not in names]
        if not missing:
            return
    raise DataError(
        f"{where.source}: data.classes names {missing} that no annotation in "
        f"{', '.join(map(str, where.class_dirs))} uses (the split uses {sorted(used)[:20]}); fix the spelling "
        "in data.classes or remove them"
    )


def voc_xml(record: ImageRecord, class_names: list[str], file_name: str) -> str:
    """A VOC annotation: integer corners ``round(x1) + 1, round(y1) + 1, round(x2), round(y2)``."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box, label, difficult in zip(record.boxes.tolist(), record.labels.tolist(), record.difficult.tolist()):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[label - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        corners = (round(box[0]) + 1, round(box[1]) + 1, round(box[2]), round(box[3]))
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), corners):
            ET.SubElement(bndbox, tag).text = str(int(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc(
    records: DatasetRecords,
    out_dir: str | os.PathLike,
    split: str,
    *,
    images: ImageMode = "copy",
    protect: Protected = (),
) -> Path:
    """Write ``Annotations/<id>.xml``, ``JPEGImages/<file>`` and ``ImageSets/Main/<split>.txt``.

    VOC folders are flat: images keep their base names, unless two of them share one, in which case
    every ``file_name`` with sub-folders becomes ``a_b_c.jpg``. Crowd boxes are written as ``difficult``
    (the closest VOC notion of a region that is not scored).
    """
    out_dir = Path(out_dir)
    names = [output_name(r.file_name) for r in records.records]
    base = [Path(n).name for n in names]
    flat = base if len(set(base)) == len(base) else [n.replace("/", "_") for n in names]
    ids, seen = [], {}
    for record, file_name in zip(progress(records.records, "write voc"), flat):
        image_id = Path(file_name).stem
        if image_id in seen:
            raise DataError(
                f"VOC ids must be unique: {seen[image_id]} and {record.image_path} both become '{image_id}'"
            )
        seen[image_id] = record.image_path
        xml_path = out_dir / "Annotations" / f"{image_id}.xml"
        guard(xml_path, protect)
        place_image(record.image_path, out_dir / "JPEGImages" / file_name, images, protect)
        flagged = ImageRecord(**{**record.__dict__, "difficult": record.difficult | record.iscrowd})
        write_text_atomic(xml_path, voc_xml(flagged, records.class_names, file_name))
        ids.append(image_id)
    list_path = out_dir / "ImageSets" / "Main" / f"{split}.txt"
    guard(list_path, protect)
    write_text_atomic(list_path, "".join(i + "\n" for i in ids))
    return out_dir
