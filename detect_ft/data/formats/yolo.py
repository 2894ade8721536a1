"""YOLO txt adapter: ``images/`` + ``labels/`` with one ``class cx cy w h`` line per box (normalised).

Layouts: a split folder holding ``images/`` and ``labels/`` (``root/train/images``), an images folder whose
labels sit at the same place under ``labels`` (``root/images/train`` -> ``root/labels/train``), a folder of
images with each label file beside its image (LabelImg's YOLO output), or a list file of image paths.
Class names come from ``classes.txt`` or ``data.yaml`` (``names:`` list or dict), searched in the split
folder, its parent and ``root``. YOLO class id ``k`` becomes label ``k + 1``.
A missing label file means a background image. Polygon lines (``class x1 y1 x2 y2 ...``, YOLO
segmentation) are reduced to their bounding box. Coordinates above 1 (beyond a small tolerance for
boxes sticking out) mean the file is in pixel units, which YOLO does not use: that is refused with the
diagnosis instead of clipping every box to nothing.

The writer (:func:`write_yolo`) is the adapter's inverse: normalised ``cx cy w h`` with class id ``label - 1``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from detect_ft.data.checks.findings import UNKNOWN_CLASS, Finding
from detect_ft.data.formats.layout import ImageMode, Protected, guard, output_name, place_image, progress
from detect_ft.data.image import IMAGE_SUFFIXES
from detect_ft.data.paths import (
    ImagePlacer,
    is_background_name,
    resolve,
    select_classes,
)
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.utils.atomic_io import write_text_atomic
from detect_ft.utils.errors import DataError
from detect_ft.utils.limits import MAX_LABEL_BYTES, MAX_LIST_BYTES, MAX_NAMES_BYTES, read_text, short_repr

# A normalised coordinate above this is no rounding slip or box sticking out of the image: pixel units.
PIXEL_UNITS_THRESHOLD = 1.5


def read_yolo_names(folders: list[Path]) -> Optional[tuple[dict[int, str], Path]]:
    """{yolo id: name} from the first ``data.yaml``/``classes.txt`` found in ``folders``, and its path."""
    for folder in folders:
        for name in ("data.yaml", "dataset.yaml", "classes.txt"):
            path = folder / name
            if not path.is_file():
                continue
            text = read_text(path, MAX_NAMES_BYTES, "class names file", DataError)
            if path.suffix == ".txt":
                lines = [line.strip() for line in text.splitlines() if line.strip()]
                return dict(enumerate(lines)), path
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise DataError(
                    f"{path} is not valid YAML ({getattr(exc, 'problem', None) or 'syntax error'})"
                ) from None
            except RecursionError:
                raise DataError(f"{path} is nested too deeply to be a YOLO data.yaml") from None
            return yolo_names(data.get("names") if isinstance(data, dict) else None, path, DataError), path
    return None


def yolo_names(names: Any, where: Any, error: type[Exception]) -> dict[int, str]:
    """{yolo id: name} of a data.yaml's ``names`` (a list, or a mapping id -> name); ``error`` otherwise."""
    scalar = lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)  # noqa: E731
    if isinstance(names, list) and all(scalar(n) for n in names):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict) and all(isinstance(k, int) and scalar(v) for k, v in names.items()):
        return {int(k): str(v) for k, v in names.items()}
    raise error(f"{where}: 'names' must be a list of names or a mapping id -> name, got {short_repr(names)}")


def label_path_for(image_path: Path, images_dir: Optional[Path] = None) -> Path:
    """The label file of an image: same relative path under ``labels/`` with a ``.txt`` suffix; for an
    image under no ``images`` folder, the ``.txt`` of the same name beside it (LabelImg's YOLO layout)."""
    parts = list(image_path.parts)
    if images_dir is not None:
        rel = image_path.relative_to(images_dir)
        return images_dir.parent / "labels" / rel.with_suffix(".txt")
    for i in range(len(parts) - 1, -1, -1):  # the last "images" component, as YOLO tools do
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def yolo_image_list(root: Path, split: str) -> tuple[list[tuple[Path, str, Path]], Path]:
    """[(image path, file name relative to its images folder, label path)] for a split, and the split path."""
    where = resolve(root, split)
    if where.is_file():
        text = read_text(where, MAX_LIST_BYTES, "YOLO image list", DataError)
        paths = [resolve(root, line.strip()) for line in text.splitlines() if line.strip()]
        return _with_some_label([(p, p.name, label_path_for(p)) for p in paths], where), where
    if not where.is_dir():
        raise DataError(f"YOLO split '{split}': {where} is neither a folder nor a list file; fix data.train/data.val")
    images_dir = where / "images" if (where / "images").is_dir() else where
    found = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise DataError(f"YOLO split folder {images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    base = images_dir if images_dir != where else None
    listed = [(p, p.relative_to(images_dir).as_posix(), label_path_for(p, base)) for p in found]
    return _with_some_label(listed, where), where


def _with_some_label(listed: list[tuple[Path, str, Path]], where: Path) -> list[tuple[Path, str, Path]]:
    """``listed``, unless every image is under no ``images`` folder and has no label file beside it: then
    the labels are elsewhere (a layout YOLO does not have), not every image a background one."""
    if listed and all(label == image.with_suffix(".txt") and not label.is_file() for image, _, label in listed):
        raise DataError(
            f"YOLO split {where}: no label file beside any of its {len(listed)} images, and no images/ "
            "folder; put each image's 'class cx cy w h' lines in a .txt of the same name beside it, or the "
            "images in images/ and the labels in labels/"
        )
    return listed


def _parse_lines(label_path: Path) -> list[tuple[str, list[float]]]:
    rows = []
    text = read_text(label_path, MAX_LABEL_BYTES, "label file", DataError)
    for line_no, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 5 or (len(tokens) > 5 and len(tokens) % 2 == 0):
            raise DataError(
                f"label file {label_path} line {line_no}: expected 'class cx cy w h' (or a polygon "
                f"'class x1 y1 x2 y2 ...'), got {len(tokens)} values"
            )
        try:
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            raise DataError(
                f"label file {label_path} line {line_no}: coordinates must be numbers: {short_repr(line)}"
            ) from None
        big = [v for v in values if math.isfinite(v) and v > PIXEL_UNITS_THRESHOLD]  # inf/nan: degenerate boxes
        if big:
            raise DataError(
                f"label file {label_path} line {line_no}: coordinate {big[0]:g} is far above 1, so these labels look "
                "like pixel units; YOLO labels are normalised to 0..1 (x and width divided by the image width, y "
                "and height by its height); convert the labels (or export them again as YOLO)"
            )
        rows.append((tokens[0], values))
    return rows


def load_yolo(
    root: str | os.PathLike,
    split: str,
    classes: Optional[list[str]] = None,
    keep_background: bool = True,
    *,
    allow_outside_root: bool = False,
    apply_orientation: bool = True,
) -> tuple[DatasetRecords, list[Finding]]:
    """Read a YOLO split; image sizes come from the image headers (YOLO stores normalised boxes).

    Args:
        root: dataset folder; ``split`` is resolved against it.
        split: split folder or list file of image paths.
        classes: optional class list: selects and orders the dataset's names; when the dataset has no
            names file it is the names list itself (YOLO id k = classes[k]).
        keep_background: keep images without boxes.
        allow_outside_root: keep images whose path (a list-file entry) is absolute or leaves ``root``, or
            that are symbolic links leaving ``root`` and the split folder (else they become
            ``outside_root`` findings and are left out before their files are opened).
        apply_orientation: image sizes (which scale the normalised boxes) in the EXIF-rotated frame.

    Returns:
        Records (boxes float32 xyxy, absolute pixels) and findings (unknown ids, unreadable images).
    """
    root = Path(root or ".")
    images, where = yolo_image_list(root, split)
    id_names, names, id_of_name, label_of_id = _yolo_classes(root, where, classes)

    # a split folder named by the config is trusted like data.root; the files in it are not: a link
    # there may point anywhere
    roots, entry = ([root], "entry") if where.is_file() else ([root, where], "image")
    placer = ImagePlacer(roots, allow_outside_root, apply_orientation)
    records, findings = [], placer.findings
    for index, (image_path, file_name, label_path) in enumerate(images):
        size = placer.size(image_path, f"{where}: {entry} {file_name!r}")
        if size is None:
            continue
        boxes, labels = _yolo_boxes(label_path, size, label_of_id, id_names, findings)
        if not boxes and not keep_background:
            continue
        records.append(
            ImageRecord(
                image_path=str(image_path),
                width=size[0],
                height=size[1],
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=labels,
                image_id=index + 1,
                file_name=file_name,
                apply_orientation=apply_orientation,
            )
        )
    category_ids = [id_of_name[n] + 1 for n in names]
    return DatasetRecords(records, names, category_ids, source=str(where)), findings


def _yolo_classes(
    root: Path, where: Path, classes: Optional[list[str]]
) -> tuple[dict[int, str], list[str], dict[str, int], dict[int, int]]:
    """``(id_names, names, id_of_name, label_of_id)``: every YOLO id's name (from the names file, else
    ``classes``), the selected class names in label order, the YOLO id of each selected name and the
    label (1..K) of each selected YOLO id."""
    folder = where if where.is_dir() else where.parent
    found = read_yolo_names([folder, folder.parent, root])
    if found is None:
        if not classes:
            raise DataError(
                f"YOLO split {where}: no classes.txt or data.yaml in {folder}, {folder.parent} or {root}; "
                "add one or set data.classes"
            )
        id_names, names_file = dict(enumerate(classes)), "data.classes"
    else:
        id_names, names_file = found
    ids = [i for i in sorted(id_names) if not is_background_name(id_names[i])]
    names, label_of_name = select_classes([id_names[i] for i in ids], classes, str(names_file))
    id_of_name = {id_names[i]: i for i in ids}
    return id_names, names, id_of_name, {id_of_name[n]: label_of_name[n] for n in names}


def _yolo_boxes(
    label_path: Path,
    size: tuple[int, int],
    label_of_id: dict[int, int],
    id_names: dict[int, str],
    findings: list[Finding],
) -> tuple[list[list[float]], list[int]]:
    """Boxes (xyxy, absolute pixels of an image of ``size`` (width, height)) and labels of one label file
    (none when it does not exist); rows of unknown or unselected class ids are appended to ``findings``
    as ``unknown_class`` instead."""
    width, height = size
    rows = _parse_lines(label_path) if label_path.is_file() else []
    boxes, labels = [], []
    for i, (token, values) in enumerate(rows):
        if len(values) == 4:
            cx, cy, w, h = values
            box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        else:
            xs, ys = values[0::2], values[1::2]
            box = [min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height]
        class_id = _class_id(token)
        if class_id is None or class_id not in label_of_id:
            findings.append(Finding(UNKNOWN_CLASS, str(label_path), _why(token, class_id, id_names), i, box))
            continue
        boxes.append(box)
        labels.append(label_of_id[class_id])
    return boxes, labels


def _class_id(token: str) -> Optional[int]:
    try:
        value = float(token)
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _why(token: str, class_id: Optional[int], id_names: dict[int, str]) -> str:
    if class_id is None:
        return f"class id {token!r} is not an integer"
    if class_id < 0:
        return f"class id {class_id} is negative; id + 1 = {class_id + 1} would collide with background (label 0)"
    if class_id in id_names and is_background_name(id_names[class_id]):
        return f"class id {class_id} '{id_names[class_id]}' is the background class (label 0) and cannot be a box label"
    if class_id in id_names:
        return f"class id {class_id} '{id_names[class_id]}' is not in data.classes"
    if not id_names:
        return f"class id {class_id} is not in the class list, which is empty"
    return f"class id {class_id} is not in the class list (ids {min(id_names)}..{max(id_names)})"


def yolo_lines(record: ImageRecord) -> list[str]:
    """``class cx cy w h`` lines (normalised to the image size) for the record's non-crowd boxes."""
    lines = []
    for box, label, crowd in zip(record.boxes.tolist(), record.labels.tolist(), record.iscrowd.tolist()):
        if crowd:
            continue  # YOLO has no ignore regions
        x1, y1, x2, y2 = box
        cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
        w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
        lines.append(f"{label - 1} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}")
    return lines


def write_yolo(
    records: DatasetRecords,
    out_dir: str | os.PathLike,
    split: str,
    *,
    images: ImageMode = "copy",
    protect: Protected = (),
) -> Path:
    """Write ``out_dir/<split>/images/<file_name>`` and ``labels/<file_name stem>.txt``, and ``data.yaml``.

    ``data.yaml`` lists the names (YOLO id k = ``class_names[k]``) and every split written so far.
    Crowd boxes are left out (YOLO has no ignore regions); ``difficult`` flags are lost.
    """
    out_dir = Path(out_dir)
    split_dir = out_dir / split
    data_yaml = out_dir / "data.yaml"
    guard(data_yaml, protect)
    for record in progress(records.records, "write yolo"):
        name = output_name(record.file_name)
        label_path = (split_dir / "labels" / name).with_suffix(".txt")
        guard(label_path, protect)
        place_image(record.image_path, split_dir / "images" / name, images, protect)
        lines = yolo_lines(record)
        write_text_atomic(label_path, "".join(line + "\n" for line in lines))
    try:
        data = (
            yaml.safe_load(read_text(data_yaml, MAX_NAMES_BYTES, "data.yaml", DataError)) if data_yaml.is_file() else {}
        )
    except (yaml.YAMLError, RecursionError):
        raise DataError(f"{data_yaml} is not valid YAML; remove it or write to another folder") from None
    data = data if isinstance(data, dict) else {}
    if data.get("names") not in (None, list(records.class_names)):
        raise DataError(f"{data_yaml} lists names {data['names']} but these records have {records.class_names}")
    data["path"] = "."
    data[split] = f"{split}/images"
    data["names"] = list(records.class_names)
    write_text_atomic(data_yaml, yaml.safe_dump(data, sort_keys=False))
    return split_dir
