"""COCO JSON adapter: ``{"images", "annotations", "categories"}`` -> DatasetRecords.

Category ids may be non-contiguous or start at 0: they are mapped to labels 1..K in order of id (or in
the order of a user ``classes`` list), and the original ids are kept in ``DatasetRecords.category_ids``
so predictions can be written back. COCO ``bbox`` is ``[x, y, w, h]`` in absolute pixels and becomes
xyxy. Crowd annotations are kept with ``iscrowd=True`` (evaluation ignore regions only). Without a user
``classes`` list, a category that only groups the others (every other category names it as its
``supercategory``) and labels no box is left out of the classes: Roboflow's COCO exports put one such
category first, and as a class it would never see a box.

Every field read is checked for its type: a value of the wrong type (``"iscrowd": "no"``, ``"width":
"wide"``) is a DataError naming the file, the entry (index and id) and the field, never a guess: a
non-empty string is truthy, so reading ``"iscrowd": "0"`` as a flag would silently make a crowd region.
A missing, null or 0 ``width``/``height`` means "unknown": the size is read from the image header.

The writer (:func:`write_coco`) is the adapter's inverse: ``bbox = [x1, y1, x2 - x1, y2 - y1]``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from detect_ft.data.checks.findings import UNKNOWN_CLASS, Finding
from detect_ft.data.formats.layout import (
    ImageMode,
    Protected,
    check_unique_ids,
    guard,
    output_name,
    place_image,
    progress,
)
from detect_ft.data.paths import ImagePlacer, is_background_name, select_classes
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.utils.atomic_io import write_json_atomic
from detect_ft.utils.errors import DataError
from detect_ft.utils.limits import MAX_JSON_BYTES, check_size, short_repr

logger = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes a DataError naming the line and column."""
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; fix data.root / data.train / data.val")
    check_size(path, MAX_JSON_BYTES, "annotation file", DataError)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except RecursionError:
        raise DataError(f"annotation file {path} is nested too deeply to be a COCO file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"annotation file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"annotation file {path} is not UTF-8 text ({exc.reason}); re-save it as UTF-8") from None


def load_coco(
    json_path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    classes: Optional[list[str]] = None,
    keep_background: bool = True,
    *,
    root: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    apply_orientation: bool = True,
) -> tuple[DatasetRecords, list[Finding]]:
    """Read a COCO detection JSON.

    Args:
        json_path: the annotation file.
        image_dir: folder that ``file_name`` is relative to; default: the JSON's folder.
        classes: optional user class list selecting and ordering the categories by name; annotations
            of other categories become ``unknown_class`` findings (and are left out of the records).
        keep_background: keep images without any annotation.
        root: the dataset folder; an image whose ``file_name`` is absolute or leaves both ``root`` and
            ``image_dir`` becomes an ``outside_root`` finding and is left out (before its file is opened)
            unless ``allow_outside_root``. None: ``image_dir`` alone.
        apply_orientation: sizes read from image headers (when the JSON lacks them) in the EXIF-rotated frame.

    Returns:
        The records (boxes float32 xyxy, absolute pixels) and the findings made while reading.
    """
    json_path = Path(json_path)
    image_dir = Path(image_dir) if image_dir else json_path.parent
    data = _read_coco(json_path)
    categories = _read_categories(data["categories"], json_path)
    if classes is None:
        _leave_out_grouping_categories(categories, data, json_path)
    names, id_of_name, label_of_id = _coco_classes(categories, classes, json_path)

    placer = ImagePlacer(
        [image_dir] + ([Path(root)] if root is not None else []), allow_outside_root, apply_orientation
    )
    findings, records = placer.findings, []
    for image_id, img in _read_images(data, json_path).items():
        image_path = image_dir / img["file_name"]
        where = f"{json_path}: image {image_id} file_name {img['file_name']!r}"
        size = placer.size(image_path, where, img["size"])
        if size is None:
            continue
        record = ImageRecord(
            image_path=str(image_path),
            width=int(size[0]),
            height=int(size[1]),
            image_id=image_id,
            file_name=img["file_name"],
            apply_orientation=apply_orientation,
            **_read_boxes(img, json_path, label_of_id, categories, findings),
        )
        if record.num_boxes or keep_background:
            records.append(record)
    categories_out = [id_of_name[n] for n in names]
    return DatasetRecords(records, names, categories_out, source=str(json_path)), findings


def _read_coco(json_path: Path) -> dict:
    """The parsed file, checked to hold the lists ``images``, ``annotations`` and ``categories``."""
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise DataError(f"{json_path}: top level must be an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: missing or non-list field '{key}'; this is not a COCO detection file")
    return data


def _read_categories(entries: list, json_path: Path) -> dict[int, str]:
    """{category id: name} of the ``categories`` list; ids must be unique."""
    categories = {}
    for i, cat in enumerate(entries):
        cid = _field(cat, "id", int, json_path, f"categories[{i}]")
        name = _field(cat, "name", str, json_path, f"categories[{i}]")
        if cid in categories:
            raise DataError(f"{json_path}: category id {cid} appears twice in 'categories'; make ids unique")
        categories[cid] = name
    return categories


def _leave_out_grouping_categories(categories: dict[int, str], data: dict, json_path: Path) -> None:
    """Remove from ``categories`` each category (of ``data``'s, already checked) that every other category
    names as its ``supercategory`` and that no annotation uses, saying so."""
    entries = data["categories"]
    used = {ann.get("category_id") for ann in data["annotations"] if isinstance(ann, dict)}
    for cat in entries if len(entries) > 1 else ():
        others = (other for other in entries if other is not cat)  # lazily: the first mismatch ends the check
        if cat["id"] not in used and all(o.get("supercategory") == cat["name"] for o in others):
            logger.info(
                "%s: category %d %r left out of the classes: it only groups the others (their supercategory) "
                "and labels no box; name it in data.classes to keep it",
                json_path,
                cat["id"],
                cat["name"],
            )
            del categories[cat["id"]]


def _coco_classes(
    categories: dict[int, str], classes: Optional[list[str]], json_path: Path
) -> tuple[list[str], dict[str, int], dict[int, int]]:
    """``(names, id_of_name, label_of_id)``: the class names in label order (``classes``, else the
    non-background categories in order of id), each one's category id, and each selected id's label."""
    ordered = [cid for cid in sorted(categories) if not is_background_name(categories[cid])]
    names, label_of_name = select_classes([categories[c] for c in ordered], classes, str(json_path))
    id_of_name = {categories[c]: c for c in ordered}
    return names, id_of_name, {id_of_name[n]: label_of_name[n] for n in names}


def _read_images(data: dict, json_path: Path) -> dict[int, dict]:
    """{image id: {file_name, size, anns: [(where, annotation)]}} in file order; ``size`` is the annotated
    (width, height) or None (read from the header then), ``where`` names the annotation in messages."""
    images: dict[int, dict] = {}
    for i, img in enumerate(data["images"]):
        image_id = _field(img, "id", int, json_path, f"images[{i}]")
        where = f"images[{i}] (id {image_id})"
        if image_id in images:
            raise DataError(f"{json_path}: image id {image_id} appears twice in 'images'; make ids unique")
        images[image_id] = {
            "file_name": _field(img, "file_name", str, json_path, where),
            "size": _annotated_size(img, json_path, where),
            "anns": [],
        }
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        image_id = _field(ann, "image_id", int, json_path, where)
        if image_id not in images:
            raise DataError(f"{json_path}: {where} refers to image_id {image_id}, which is not in 'images'")
        ann_id = f"id {short_repr(ann['id'])}, " if "id" in ann else ""
        images[image_id]["anns"].append((f"{where} ({ann_id}image id {image_id})", ann))
    return images


def _annotated_size(img: dict, json_path: Path, where: str) -> Optional[tuple[int, int]]:
    """The image's (width, height) in the JSON; None when either is missing, null or 0 (some exporters
    leave them out; the image header gives the size then, without decoding). Any other value that is
    not a positive whole number is a DataError: a typo must not pass for "unknown"."""
    size = []
    for key in ("width", "height"):
        value = img.get(key)
        if value is None or (_is_number(value) and value == 0):
            return None
        if not (_is_number(value) and value > 0 and float(value).is_integer()):
            raise DataError(
                f"{json_path}: {where} field '{key}' must be a positive whole number of pixels, got "
                f"{short_repr(value)}; write the image's {key} as a number, or remove the field to have it "
                "read from the image file"
            )
        size.append(int(value))
    return size[0], size[1]


def _read_boxes(
    img: dict, json_path: Path, label_of_id: dict[int, int], categories: dict[int, str], findings: list[Finding]
) -> dict[str, np.ndarray]:
    """The image's ``boxes`` (float32 (N, 4), xyxy, absolute pixels), ``labels`` and ``iscrowd`` flags, as
    ImageRecord arguments; boxes of classes not selected are appended to ``findings`` as ``unknown_class``."""
    boxes, labels, crowd = [], [], []
    for where, ann in img["anns"]:
        cid = _field(ann, "category_id", int, json_path, where)
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DataError(
                f"{json_path}: {where} field 'bbox' must be 4 numbers [x, y, w, h], got {short_repr(bbox)}; "
                "fix the box or remove the annotation"
            )
        x, y, w, h = (float(v) for v in bbox)
        if cid not in label_of_id:
            findings.append(_unknown(cid, categories, json_path, where, img["file_name"], [x, y, x + w, y + h]))
            continue
        boxes.append([x, y, x + w, y + h])
        labels.append(label_of_id[cid])
        crowd.append(_crowd_flag(ann, json_path, where))
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": labels, "iscrowd": crowd}


def _crowd_flag(ann: dict, json_path: Path, where: str) -> bool:
    """The annotation's ``iscrowd`` (missing or null: 0); only the numbers 0 and 1 (or true/false) are
    flags: the string ``"0"`` is truthy in Python and would make every box a crowd region."""
    value = ann.get("iscrowd")
    if value is None:
        return False
    if (_is_number(value) or isinstance(value, bool)) and value in (0, 1):
        return bool(value)
    raise DataError(
        f"{json_path}: {where} field 'iscrowd' must be 0 (a box) or 1 (a crowd region), got {short_repr(value)}; "
        "write 0 or 1 as a number, not text"
    )


def _unknown(cid: int, categories: dict, json_path: Path, where: str, file_name: str, box: list) -> Finding:
    if cid not in categories:
        why = f"category_id {cid} is not in 'categories'"
    elif is_background_name(categories[cid]):
        why = f"category {cid} '{categories[cid]}' is the background class (label 0) and cannot be a box label"
    else:
        why = f"category {cid} '{categories[cid]}' is not in data.classes"
    return Finding(UNKNOWN_CLASS, str(json_path), f"{where} (image {file_name}): {why}", None, box)


def _field(obj: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """``obj[key]``, checked to be of ``kind`` (int: a whole number, not a bool or a string of digits)."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where} must be an object with the field '{key}', got {short_repr(obj)}")
    if key not in obj:
        raise DataError(f"{path}: {where} is missing the field '{key}'; add it")
    value = obj[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        what = "a whole number (not text)" if kind is int else "text (a JSON string)"
        raise DataError(f"{path}: {where} field '{key}' must be {what}, got {short_repr(value)}; fix it in the file")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def coco_dict(records: DatasetRecords, image_dir: str | os.PathLike | None = None) -> dict:
    """The COCO detection dict of ``records``; ``file_name`` relative to ``image_dir`` (None: the record's)."""
    categories = [{"id": cid, "name": name} for cid, name in zip(records.category_ids, records.class_names)]
    images, annotations = [], []
    for record in records.records:
        file_name = record.file_name
        if image_dir is not None:
            file_name = Path(os.path.relpath(Path(record.image_path).absolute(), Path(image_dir).absolute())).as_posix()
        images.append({"id": record.image_id, "file_name": file_name, "width": record.width, "height": record.height})
        for box, label, crowd in zip(record.boxes.tolist(), record.labels.tolist(), record.iscrowd.tolist()):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record.image_id,
                    "category_id": records.category_ids[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(crowd),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(
    records: DatasetRecords,
    json_path: str | os.PathLike,
    *,
    images: ImageMode = "none",
    image_subdir: str = "images",
    protect: Protected = (),
) -> Path:
    """Write ``records`` as a COCO JSON whose ``file_name`` entries are relative to the JSON's folder.

    That is where the COCO adapter looks by default (``data.images`` empty). With ``images="none"`` the
    images stay where they are and ``file_name`` points at them (possibly through ``..``); with
    ``copy``/``symlink`` they are placed at ``<json folder>/<image_subdir>/<record.file_name>``.
    """
    json_path = Path(json_path)
    check_unique_ids(records)
    guard(json_path, protect)
    if images != "none":
        placed = []
        for record in progress(records.records, "copy images"):
            name = output_name(record.file_name)
            target = json_path.parent / image_subdir / name
            place_image(record.image_path, target, images, protect)
            placed.append(ImageRecord(**{**record.__dict__, "image_path": str(target), "file_name": name}))
        records = DatasetRecords(placed, records.class_names, records.category_ids, records.source)
    write_json_atomic(json_path, coco_dict(records, json_path.parent), indent=None)
    return json_path
