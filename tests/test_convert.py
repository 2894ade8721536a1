"""Converters: VOC -> COCO -> YOLO -> COCO -> VOC loses no box; the convert command."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from detect_ft.cli.main import main
from detect_ft.data.convert import convert_split
from detect_ft.data.formats.coco import write_coco
from detect_ft.data.formats.voc import write_voc
from detect_ft.data.formats.yolo import write_yolo
from detect_ft.data.load import load_split
from detect_ft.data.records import DatasetRecords, ImageRecord

SIZES = [(97, 61), (61, 97), (128, 80), (33, 47)]


def _voc(root: Path) -> Path:
    """Four images of odd sizes with random integer VOC corners (1-based, inside the image)."""
    rng = np.random.default_rng(3)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for i, (w, h) in enumerate(SIZES):
        cv2.imwrite(str(root / "JPEGImages" / f"p{i}.jpg"), np.full((h, w, 3), 40 * i, np.uint8))
        objects = ""
        for j in range(i + 1):
            x1, y1 = int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))
            x2, y2 = int(rng.integers(x1 + 1, w + 1)), int(rng.integers(y1 + 1, h + 1))
            name = ("cat", "dog", "bird")[(i + j) % 3]
            objects += (
                f"<object><name>{name}</name><difficult>{j % 2}</difficult><bndbox><xmin>{x1}</xmin>"
                f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            )
        (root / "Annotations" / f"p{i}.xml").write_text(
            f"<annotation><filename>p{i}.jpg</filename><size><width>{w}</width><height>{h}</height></size>"
            f"{objects}</annotation>"
        )
    (root / "ImageSets" / "Main" / "train.txt").write_text("p0\np1\np2\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("p3\n")
    return root


def _corners(xml_path: Path) -> list[tuple[int, ...]]:
    import xml.etree.ElementTree as ET

    root = ET.parse(xml_path).getroot()
    tags = ("xmin", "ymin", "xmax", "ymax")
    return [tuple(int(o.find("bndbox").findtext(t)) for t in tags) for o in root.iter("object")]


def _by_name(records: DatasetRecords) -> dict[str, ImageRecord]:
    return {Path(r.file_name).name: r for r in records.records}


def test_round_trip_voc_coco_yolo_coco_voc_loses_no_box(tmp_path):
    voc = _voc(tmp_path / "voc")
    original, _ = load_split(format="voc", root=voc, split="train")
    names = original.class_names

    path, _, findings = convert_split(
        src_format="voc",
        root=voc,
        split="train",
        dst_format="coco",
        out_dir=tmp_path / "coco",
        name="train",
        image_mode="none",
    )
    assert findings == [] and path.name == "train.json"
    # image_mode="none" points file_name at the originals, outside the new folder: allowed explicitly
    coco, _ = load_split(format="coco", root=tmp_path / "coco", split="train.json", allow_outside_root=True)
    for name, rec in _by_name(original).items():
        np.testing.assert_array_equal(_by_name(coco)[name].boxes, rec.boxes)  # COCO keeps floats exactly
        assert _by_name(coco)[name].labels.tolist() == rec.labels.tolist()

    convert_split(
        src_format="coco",
        root=tmp_path / "coco",
        split="train.json",
        dst_format="yolo",
        out_dir=tmp_path / "yolo",
        name="train",
        allow_outside_root=True,
    )
    yolo, _ = load_split(format="yolo", root=tmp_path / "yolo", split="train")
    assert yolo.class_names == names
    convert_split(
        src_format="yolo",
        root=tmp_path / "yolo",
        split="train",
        dst_format="coco",
        out_dir=tmp_path / "coco2",
        name="train",
        image_mode="copy",
    )
    coco2, _ = load_split(format="coco", root=tmp_path / "coco2", split="train.json")
    assert coco2.num_boxes == original.num_boxes == 1 + 2 + 3
    for loaded in (yolo, coco2):
        for name, rec in _by_name(original).items():
            other = _by_name(loaded)[name]
            np.testing.assert_allclose(other.boxes, rec.boxes, atol=1e-3)
            assert other.labels.tolist() == rec.labels.tolist()

    write_voc(coco2, tmp_path / "voc2", "train")
    for i in range(3):
        assert _corners(tmp_path / "voc2" / "Annotations" / f"p{i}.xml") == _corners(voc / "Annotations" / f"p{i}.xml")
    again, _ = load_split(format="voc", root=tmp_path / "voc2", split="train")
    for name, rec in _by_name(original).items():
        np.testing.assert_array_equal(_by_name(again)[name].boxes, rec.boxes)


def test_crowd_boxes_are_left_out_of_yolo_and_difficult_in_voc(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((50, 100, 3), np.uint8))
    record = ImageRecord(str(image), 100, 50, [[10, 10, 20, 20], [0, 0, 50, 50]], [1, 1], iscrowd=[False, True])
    records = DatasetRecords([record], ["cat"], [7])
    write_yolo(records, tmp_path / "yolo", "train")
    assert (tmp_path / "yolo" / "train" / "labels" / "a.txt").read_text().splitlines() == [
        "0 0.15000000 0.30000000 0.10000000 0.20000000"
    ]
    write_voc(records, tmp_path / "voc", "train")
    loaded, _ = load_split(format="voc", root=tmp_path / "voc", split="train")
    assert loaded.records[0].difficult.tolist() == [False, True]
    write_coco(records, tmp_path / "c" / "x.json")
    data = json.loads((tmp_path / "c" / "x.json").read_text())
    assert data["categories"] == [{"id": 7, "name": "cat"}]
    assert [a["iscrowd"] for a in data["annotations"]] == [0, 1] and data["annotations"][0]["category_id"] == 7


def _convert_voc(root: Path, out: Path, to: str, *extra: str, splits: tuple[str, ...] = ("train",)) -> int:
    """``detect-ft convert --from voc --to TO`` of ``root``'s ``splits`` into ``out``; the exit status."""
    argv = ["convert", "--from", "voc", "--to", to, "--root", str(root), "--out", str(out)]
    for split in splits:
        argv += ["--split", split]
    return main(argv + list(extra))


def test_convert_command(tmp_path, capsys):
    voc = _voc(tmp_path / "voc")
    out = tmp_path / "out"
    assert _convert_voc(voc, out, "yolo", splits=("train", "val")) == 0
    printed = capsys.readouterr().out
    assert "format: yolo" in printed and "train: train" in printed and "val: val" in printed
    train, _ = load_split(format="yolo", root=out, split="train")
    val, _ = load_split(format="yolo", root=out, split="val", classes=train.class_names)
    assert (len(train), len(val), train.num_boxes + val.num_boxes) == (3, 1, 10)


def test_convert_command_refuses_yolo_without_images(tmp_path, capsys):
    assert _convert_voc(_voc(tmp_path / "voc"), tmp_path / "o2", "yolo", "--image-mode", "none") == 2
    assert "--image-mode none" in capsys.readouterr().err


def test_convert_command_lists_boxes_of_unselected_classes(tmp_path, capsys):
    assert _convert_voc(_voc(tmp_path / "voc"), tmp_path / "o3", "coco", "--classes", "dog") == 0
    assert "could not be converted" in capsys.readouterr().out
    coco, _ = load_split(format="coco", root=tmp_path / "o3", split="train.json")
    assert coco.class_names == ["dog"] and (tmp_path / "o3" / "images" / "p0.jpg").is_file()
