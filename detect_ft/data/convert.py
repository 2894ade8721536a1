"""Writers from DatasetRecords to COCO JSON, YOLO txt and Pascal VOC XML, and :func:`convert`.

Each writer is the inverse of its adapter: COCO ``bbox = [x1, y1, x2 - x1, y2 - y1]``; YOLO normalised
``cx cy w h`` with class id ``label - 1``; VOC integer corners ``(x1 + 1, y1 + 1, x2, y2)`` (the adapter
reads ``xmin - 1, ymin - 1, xmax, ymax``). Annotation files are written atomically; images are copied
(or symlinked) into the new layout when the format needs them there.

Safety: only image files are copied or linked (a file an annotation names that is not an image is
refused before anything is written), images outside the source dataset are not read unless allowed
(see :func:`detect_ft.data.load.load_split`), and no writer ever writes over the source annotations
(``protect``): converting a dataset into its own folder fails instead of destroying it.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal, Optional

import yaml

from detect_ft.data.findings import Finding
from detect_ft.data.image import IMAGE_SUFFIXES, read_image_info
from detect_ft.data.load import load_split
from detect_ft.data.paths import resolve
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.errors import DataError
from detect_ft.io import atomic_path, write_json_atomic, write_text_atomic
from detect_ft.limits import MAX_NAMES_BYTES, read_text

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


def _guard(target: Path, protect: Protected) -> None:
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
    _guard(target, protect)
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
    _check_unique_ids(records)
    _guard(json_path, protect)
    if images != "none":
        placed = []
        for record in _progress(records.records, "copy images"):
            name = output_name(record.file_name)
            target = json_path.parent / image_subdir / name
            place_image(record.image_path, target, images, protect)
            placed.append(ImageRecord(**{**record.__dict__, "image_path": str(target), "file_name": name}))
        records = DatasetRecords(placed, records.class_names, records.category_ids, records.source)
    write_json_atomic(json_path, coco_dict(records, json_path.parent), indent=None)
    return json_path


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
    _guard(data_yaml, protect)
    for record in _progress(records.records, "write yolo"):
        name = output_name(record.file_name)
        label_path = (split_dir / "labels" / name).with_suffix(".txt")
        _guard(label_path, protect)
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
    for record, file_name in zip(_progress(records.records, "write voc"), flat):
        image_id = Path(file_name).stem
        if image_id in seen:
            raise DataError(
                f"VOC ids must be unique: {seen[image_id]} and {record.image_path} both become '{image_id}'"
            )
        seen[image_id] = record.image_path
        xml_path = out_dir / "Annotations" / f"{image_id}.xml"
        _guard(xml_path, protect)
        place_image(record.image_path, out_dir / "JPEGImages" / file_name, images, protect)
        flagged = ImageRecord(**{**record.__dict__, "difficult": record.difficult | record.iscrowd})
        write_text_atomic(xml_path, voc_xml(flagged, records.class_names, file_name))
        ids.append(image_id)
    list_path = out_dir / "ImageSets" / "Main" / f"{split}.txt"
    _guard(list_path, protect)
    write_text_atomic(list_path, "".join(i + "\n" for i in ids))
    return out_dir


def _progress(records: list[ImageRecord], what: str):
    """``records`` with a progress bar on a terminal (tqdm's ``disable=None``: never in logs or tests)."""
    from tqdm import tqdm

    return tqdm(records, desc=what, unit="img", disable=None, leave=False)


def _check_unique_ids(records: DatasetRecords) -> None:
    counts: dict[int, int] = {}
    for record in records.records:
        counts[record.image_id] = counts.get(record.image_id, 0) + 1
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        raise DataError(f"{records.source}: image ids {repeated[:5]} repeat; COCO needs unique image ids")


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
        return (root / "Annotations", root / "ImageSets", resolve(root, split))
    from detect_ft.data.yolo import label_path_for

    where = resolve(root, split)
    names = [
        folder / name
        for folder in {where if where.is_dir() else where.parent, root}
        for name in ("data.yaml", "dataset.yaml", "classes.txt")
    ]
    labels = set()
    for record in records.records:
        try:
            labels.add(label_path_for(Path(record.image_path)).parent)
        except DataError:
            pass
    if where.is_dir():
        labels.add(where / "labels")
    return (where, *names, *sorted(labels)) if where.is_file() else (*names, *sorted(labels))
