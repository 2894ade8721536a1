"""COCO, VOC and YOLO adapters and load_split, on tiny datasets written in tmp_path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import flat_image, voc_xml

from detect_ft.cli.main import main
from detect_ft.config import load_config
from detect_ft.data.checks.findings import MISSING_IMAGE, UNKNOWN_CLASS
from detect_ft.data.load import load_split
from detect_ft.utils.errors import ConfigError, DataError

# ---------------------------------------------------------------- COCO


def _coco(tmp_path, **changes):
    flat_image(tmp_path / "imgs" / "sub" / "a.png")
    flat_image(tmp_path / "imgs" / "b.png")
    data = {
        "images": [
            {"id": 7, "file_name": "sub/a.png", "width": 64, "height": 48},
            {"id": 9, "file_name": "b.png", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 0, "bbox": [1, 2, 3, 4], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0.5, 0.5, 4, 4]},
        ],
        "categories": [{"id": 5, "name": "dog"}, {"id": 0, "name": "cat"}, {"id": 3, "name": "bird"}],
    }
    data.update(changes)
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return data


def test_coco_maps_ids_in_order_and_keeps_crowd_and_background(tmp_path):
    _coco(tmp_path)
    records, findings = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    assert findings == []
    assert records.class_names == ["cat", "bird", "dog"]  # sorted by id 0, 3, 5
    assert records.category_ids == [0, 3, 5]
    a, b = records.records
    assert a.image_id == 7 and a.file_name == "sub/a.png" and a.image_path.endswith("imgs/sub/a.png")
    np.testing.assert_allclose(a.boxes, [[10, 5, 30, 15], [1, 2, 4, 6], [0.5, 0.5, 4.5, 4.5]])
    assert a.labels.tolist() == [3, 1, 2]
    assert a.iscrowd.tolist() == [False, True, False]
    assert b.num_boxes == 0  # background image kept by default
    records, _ = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs", keep_background=False)
    assert [r.image_id for r in records.records] == [7]


def test_coco_leaves_out_a_category_that_only_groups_the_others(tmp_path, caplog, capsys):
    # Roboflow's COCO exports: category 0 is every other one's supercategory and labels no box
    grouped = [{"id": 5, "name": "dog", "supercategory": "pets"}, {"id": 3, "name": "bird", "supercategory": "pets"}]
    pets = {"id": 0, "name": "pets", "supercategory": "none"}
    boxes = [{"id": 1, "image_id": 7, "category_id": 5, "bbox": [10, 5, 20, 10]}]
    _coco(tmp_path, categories=[pets, *grouped], annotations=boxes)
    with caplog.at_level("INFO", logger="detect_ft"):
        records, findings = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    assert records.class_names == ["bird", "dog"] and records.category_ids == [3, 5] and findings == []
    assert "category 0 'pets' left out of the classes" in caplog.text and "data.classes" in caplog.text
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{format: coco, root: {tmp_path}, images: imgs, train: ann.json, val: ann.json}}\n")
    assert main(["check-data", str(config), "--fast"]) == 0  # the training split is read once
    assert capsys.readouterr().out.count("left out of the classes") == 1
    records, _ = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs", classes=["pets", "dog"])
    assert records.class_names == ["pets", "dog"]  # named: kept
    labelling = {"id": 2, "image_id": 7, "category_id": 0, "bbox": [1, 1, 2, 2]}
    _coco(tmp_path, categories=[pets, *grouped], annotations=[*boxes, labelling])  # it labels a box: a class
    assert load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")[0].class_names[0] == "pets"
    ungrouped_bird = {"id": 3, "name": "bird"}
    _coco(tmp_path, categories=[pets, grouped[0], ungrouped_bird], annotations=boxes)  # it does not group them all
    assert load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")[0].class_names[0] == "pets"


def test_coco_user_classes_select_and_order(tmp_path):
    _coco(tmp_path)
    records, findings = load_split(
        format="coco", root=tmp_path, split="ann.json", images="imgs", classes=["dog", "cat"]
    )
    assert records.class_names == ["dog", "cat"] and records.category_ids == [5, 0]
    assert records.records[0].labels.tolist() == [1, 2]
    assert len(findings) == 1 and findings[0].kind == UNKNOWN_CLASS and "bird" in findings[0].message
    with pytest.raises(DataError, match="data.classes"):
        load_split(format="coco", root=tmp_path, split="ann.json", images="imgs", classes=["horse"])


def test_coco_background_category_and_unknown_id_are_findings(tmp_path):
    cats = [{"id": 0, "name": "background"}, {"id": 1, "name": "cat"}]
    anns = [
        {"id": 1, "image_id": 7, "category_id": 0, "bbox": [1, 1, 5, 5]},
        {"id": 2, "image_id": 7, "category_id": 4, "bbox": [1, 1, 5, 5]},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]},
    ]
    _coco(tmp_path, categories=cats, annotations=anns)
    records, findings = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    assert records.class_names == ["cat"] and records.category_ids == [1]
    assert [f.kind for f in findings] == [UNKNOWN_CLASS, UNKNOWN_CLASS]
    assert "background" in findings[0].message and "annotations[0]" in findings[0].message
    assert "not in 'categories'" in findings[1].message


def test_coco_malformed_files_name_file_and_place(tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"bad.json.*line 2"):
        load_split(format="coco", root=tmp_path, split="bad.json")
    _coco(tmp_path, images=[{"id": 1, "width": 4, "height": 4}])
    with pytest.raises(DataError, match=r"images\[0\].*'file_name'"):
        load_split(format="coco", root=tmp_path, split="ann.json")
    _coco(tmp_path, annotations=[{"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2]}])
    with pytest.raises(DataError, match="bbox"):
        load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    with pytest.raises(DataError, match="does not exist"):
        load_split(format="coco", root=tmp_path, split="nope.json")


def test_coco_missing_size_is_read_from_header(tmp_path):
    _coco(tmp_path, images=[{"id": 7, "file_name": "sub/a.png"}, {"id": 8, "file_name": "gone.png"}], annotations=[])
    records, findings = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    assert (records.records[0].width, records.records[0].height) == (64, 48)
    assert [f.kind for f in findings] == [MISSING_IMAGE] and "gone.png" in findings[0].file


# ---------------------------------------------------------------- VOC


def _voc(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    flat_image(tmp_path / "JPEGImages" / "x1.jpg")
    flat_image(tmp_path / "JPEGImages" / "x2.jpg")
    (tmp_path / "Annotations" / "x1.xml").write_text(
        voc_xml("x1.jpg", [("dog", (1, 1, 64, 48), 0), ("cat", (11, 6, 30, 20), 1)])
    )
    (tmp_path / "Annotations" / "x2.xml").write_text(voc_xml("x2.jpg", [], size=None))
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("x1\nx2\n")
    (tmp_path / "mylist.txt").write_text("x2  1\n")


def test_voc_corners_difficult_and_sorted_names(tmp_path):
    _voc(tmp_path)
    records, findings = load_split(format="voc", root=tmp_path, split="train")
    assert findings == [] and records.class_names == ["cat", "dog"]
    x1, x2 = records.records
    np.testing.assert_array_equal(x1.boxes, [[0, 0, 64, 48], [10, 5, 30, 20]])  # 1..W spans 0..W
    assert x1.labels.tolist() == [2, 1] and x1.difficult.tolist() == [False, True]
    assert (x2.width, x2.height) == (64, 48)  # no <size>: read from the header
    records, _ = load_split(format="voc", root=tmp_path, split="mylist.txt", classes=["cat", "dog"])
    assert [r.file_name for r in records.records] == ["x2.jpg"]


def _voc_folders(root):
    """VOC as Roboflow exports it (and LabelImg saves it): split folders of images beside their XML files."""
    for split, objects in (
        ("train", [("dog", (1, 1, 64, 48)), ("cat", (11, 6, 30, 20))]),
        ("valid", [("cat", (2, 2, 9, 9))]),
    ):
        flat_image(root / split / "p.jpg")
        (root / split / "p.xml").write_text(voc_xml("p.jpg", objects))
    flat_image(root / "train" / "unlabelled.jpg")  # an image without an XML file is no part of the split


def test_voc_split_folders_of_images_beside_their_xml(tmp_path):
    _voc_folders(tmp_path)
    records, findings = load_split(format="voc", root=tmp_path, split="train")
    assert findings == [] and records.class_names == ["cat", "dog"] and records.source == str(tmp_path / "train")
    (record,) = records.records
    assert record.image_path == str(tmp_path / "train" / "p.jpg") and record.labels.tolist() == [2, 1]
    # validation against the training classes: 'dog' is found in the sibling folder
    records, _ = load_split(format="voc", root=tmp_path, split="valid", classes=["cat", "dog"])
    assert records.records[0].labels.tolist() == [1]
    with pytest.raises(DataError, match=r"data.classes names \['dgo'\] that no annotation in .*train.*uses"):
        load_split(format="voc", root=tmp_path, split="valid", classes=["cat", "dgo"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"folder .*empty holds no .xml annotation files"):
        load_split(format="voc", root=tmp_path, split="empty")
    with pytest.raises(DataError, match=r"nor a folder .*test exists.*a folder of images and their XML files"):
        load_split(format="voc", root=tmp_path, split="test")
    out = tmp_path / "as-coco"
    argv = ["convert", "--from", "voc", "--to", "coco", "--root", str(tmp_path), "--split", "train", "--out", str(out)]
    assert main(argv) == 0
    assert [image["file_name"] for image in json.loads((out / "train.json").read_text())["images"]] == ["images/p.jpg"]


def test_voc_user_classes_and_errors(tmp_path):
    _voc(tmp_path)
    records, findings = load_split(format="voc", root=tmp_path, split="train", classes=["dog"])
    assert records.records[0].labels.tolist() == [1]
    assert findings[0].kind == UNKNOWN_CLASS and findings[0].box_index == 1 and "cat" in findings[0].message
    (tmp_path / "Annotations" / "x2.xml").write_text("<annotation>\n<size>\n</annotation>")
    with pytest.raises(DataError, match=r"x2.xml: XML parse error at line 3"):
        load_split(format="voc", root=tmp_path, split="train")
    with pytest.raises(DataError, match="ImageSets"):
        load_split(format="voc", root=tmp_path, split="test")


# ---------------------------------------------------------------- YOLO


def test_yolo_split_folder_with_data_yaml(tmp_path):
    flat_image(tmp_path / "train" / "images" / "a.png", 100, 50)
    flat_image(tmp_path / "train" / "images" / "b.png", 100, 50)
    (tmp_path / "train" / "labels").mkdir()
    (tmp_path / "train" / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1\n\n")
    (tmp_path / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
    records, findings = load_split(format="yolo", root=tmp_path, split="train")
    assert findings == [] and records.class_names == ["cat", "dog"] and records.category_ids == [1, 2]
    a, b = records.records
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [5, 2.5, 15, 7.5]], atol=1e-4)
    assert a.labels.tolist() == [2, 1] and b.num_boxes == 0  # no label file: background


def test_yolo_ultralytics_layout_list_file_and_bad_ids(tmp_path):
    flat_image(tmp_path / "images" / "val" / "a.jpg", 40, 40)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n-1 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    for split in ("images/val", "list.txt"):
        (tmp_path / "list.txt").write_text("images/val/a.jpg\n")
        records, findings = load_split(format="yolo", root=tmp_path, split=split)
        assert records.records[0].labels.tolist() == [1]
        assert [f.box_index for f in findings] == [1, 2]
        assert "collide with background" in findings[0].message and "not in the class list" in findings[1].message
    (tmp_path / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.5\n")
    with pytest.raises(DataError, match=r"a.txt line 1"):
        load_split(format="yolo", root=tmp_path, split="images/val")


def _roboflow_export(root):
    """A YOLO dataset as Roboflow exports it: split folders, and a data.yaml whose paths start with ../"""
    for split in ("train", "valid"):
        flat_image(root / split / "images" / "a.jpg", 40, 40)
        (root / split / "labels").mkdir()
        (root / split / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\nnc: 2\nnames: ['cat', 'dog']\n"
        "roboflow:\n  workspace: w\n"
    )
    return root / "data.yaml"


def test_an_ultralytics_dataset_file_is_a_config_of_its_data(tmp_path, capsys):
    dataset_file = _roboflow_export(tmp_path / "export")
    cfg = load_config(dataset_file, ["train.epochs=3"])
    data = cfg.data
    assert (data.format, data.root, data.train, data.val) == (
        "yolo",
        str(tmp_path / "export"),
        "train/images",
        "valid/images",
    )
    assert data.classes == ["cat", "dog"] and cfg.train.epochs == 3
    assert main(["check-data", str(dataset_file), "--fast"]) == 0
    assert "loaded 1 images, 1 boxes" in capsys.readouterr().out
    # path: the dataset folder, relative to the file; names as a mapping
    (tmp_path / "elsewhere.yaml").write_text("path: export\ntrain: train/images\nnames: {0: cat, 1: dog}\n")
    data = load_config(tmp_path / "elsewhere.yaml").data
    assert (data.root, data.train, data.val, data.classes) == (
        str(tmp_path / "export"),
        "train/images",
        "",
        ["cat", "dog"],
    )
    # a detect-ft config with a stray 'names' key is still read as a config (and the key refused)
    (tmp_path / "config.yaml").write_text("data: {format: yolo}\nnames: [cat]\n")
    with pytest.raises(ConfigError, match="config key ''names'': got \\['cat'\\]; allowed: a mapping"):
        load_config(tmp_path / "config.yaml")
    # no train entry (predict --save-format yolo names its split 'predictions'): an override gives it
    (tmp_path / "export" / "pseudo.yaml").write_text("predictions: train/images\nnames: [cat, dog]\n")
    assert load_config(tmp_path / "export" / "pseudo.yaml", ["data.train=train/images"]).data.train == "train/images"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: a\nnames: {0: cat, 2: dog}", r"'names' ids must be 0..1, got \[0, 2\]"),
        ("train: a\nnc: 3\nnames: [cat, dog]", "'nc' is 3 but 'names' lists 2"),
        ("train: [a, b]\nnames: [cat]", "'train': got .*one images folder or list file per split"),
        ("path: nowhere\ntrain: a\nnames: [cat]", "'path' nowhere is no folder"),
        ("val: a\nnames: [cat]", "has no 'train' entry"),
        ("train: a\nnames: 5", "'names' must be a list"),
    ],
)
def test_a_bad_ultralytics_dataset_file_is_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "data.yaml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path / "data.yaml")
    assert "\n" not in str(info.value) and "data.yaml (a YOLO dataset file)" in str(info.value)


def test_yolo_labels_beside_their_images_as_labelimg_saves_them(tmp_path):
    flat_image(tmp_path / "train" / "a.jpg", 100, 50)
    flat_image(tmp_path / "train" / "b.png", 100, 50)
    (tmp_path / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (tmp_path / "train" / "classes.txt").write_text("cat\n")
    records, findings = load_split(format="yolo", root=tmp_path, split="train")
    assert findings == [] and records.class_names == ["cat"]
    a, b = records.records
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35]], atol=1e-4)
    assert b.num_boxes == 0  # no label file beside it: background
    (tmp_path / "train" / "a.txt").unlink()  # no label beside any image: a layout mistake, not a background set
    (tmp_path / "list.txt").write_text("train/a.jpg\ntrain/b.png\n")
    for split in ("train", "list.txt"):
        with pytest.raises(DataError, match=r"no label file beside any of its 2 images, and no images/ folder"):
            load_split(format="yolo", root=tmp_path, split=split)


def test_yolo_needs_names(tmp_path):
    flat_image(tmp_path / "train" / "images" / "a.png")
    with pytest.raises(DataError, match="classes.txt or data.yaml"):
        load_split(format="yolo", root=tmp_path, split="train")
    records, _ = load_split(format="yolo", root=tmp_path, split="train", classes=["x", "y"])
    assert records.class_names == ["x", "y"]


def test_load_split_rejects_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="data.format"):
        load_split(format="kitti", root=tmp_path, split="x")
    with pytest.raises(DataError, match="data.root"):
        load_split(format="voc", root=tmp_path / "missing", split="train")


# ---------------------------------------------------------------- class lists, units and paths


def test_voc_class_list_names_must_be_used_by_some_annotation(tmp_path):
    _voc(tmp_path)
    with pytest.raises(DataError, match=r"data.classes names \['racoon'\] that no annotation"):
        load_split(format="voc", root=tmp_path, split="train", classes=["cat", "racoon"])
    # a split may lack a class that other annotations of the dataset use (a small validation split)
    records, _ = load_split(format="voc", root=tmp_path, split="mylist.txt", classes=["cat", "dog"])
    assert records.class_names == ["cat", "dog"]


def _background_everywhere(tmp_path):
    """The same dataset (classes cat and background, one box each) in the three formats."""
    flat_image(tmp_path / "coco" / "a.png")
    (tmp_path / "coco" / "ann.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]},
                    {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 20, 9, 9]},
                ],
                "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "Background"}],
            }
        )
    )
    voc = tmp_path / "voc"
    flat_image(voc / "JPEGImages" / "a.jpg")
    (voc / "Annotations").mkdir()
    (voc / "Annotations" / "a.xml").write_text(
        voc_xml("a.jpg", [("cat", (2, 2, 10, 10), 0), ("Background", (21, 21, 29, 29), 0)])
    )
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    yolo = tmp_path / "yolo"
    flat_image(yolo / "train" / "images" / "a.png")
    (yolo / "train" / "labels").mkdir()
    (yolo / "train" / "labels" / "a.txt").write_text("0 0.1 0.1 0.1 0.1\n1 0.5 0.5 0.1 0.1\n")
    (yolo / "classes.txt").write_text("cat\nBackground\n")
    return {"coco": (tmp_path / "coco", "ann.json"), "voc": (voc, "train"), "yolo": (yolo, "train")}


def test_a_class_named_like_the_background_is_refused_consistently_in_every_format(tmp_path):
    for fmt, (root, split) in _background_everywhere(tmp_path).items():
        records, findings = load_split(format=fmt, root=root, split=split)
        assert records.class_names == ["cat"], fmt
        (finding,) = findings
        assert finding.kind == UNKNOWN_CLASS and "is the background class (label 0)" in finding.message, fmt
        with pytest.raises(DataError, match=r"names \['Background'\], which mean background"):
            load_split(format=fmt, root=root, split=split, classes=["cat", "Background"])


def test_yolo_labels_in_pixel_units_are_refused_with_that_diagnosis(tmp_path):
    flat_image(tmp_path / "train" / "images" / "a.png", 640, 480)
    (tmp_path / "train" / "labels").mkdir()
    (tmp_path / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 320 240 64 48\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.raises(DataError, match=r"a.txt line 2: coordinate 320 is far above 1.*pixel units.*normalised"):
        load_split(format="yolo", root=tmp_path, split="train")
    # a normalised box sticking out a little is no unit mistake: it is clipped by the doctor as usual
    (tmp_path / "train" / "labels" / "a.txt").write_text("0 0.95 0.5 0.2 0.2\n")
    records, _ = load_split(format="yolo", root=tmp_path, split="train")
    assert records.num_boxes == 1


def test_image_paths_outside_the_dataset_are_refused_by_default(tmp_path):
    from detect_ft.data.checks.doctor import prepare_split
    from detect_ft.data.checks.findings import OUTSIDE_ROOT

    outside = flat_image(tmp_path / "elsewhere" / "x.png")
    root = tmp_path / "data"
    _coco(root)
    data = json.loads((root / "ann.json").read_text())
    data["images"] += [
        {"id": 11, "file_name": str(outside), "width": 64, "height": 48},
        {"id": 12, "file_name": "../../elsewhere/x.png", "width": 64, "height": 48},
    ]
    (root / "ann.json").write_text(json.dumps(data))
    records, findings = load_split(format="coco", root=root, split="ann.json", images="imgs")
    assert [r.image_id for r in records.records] == [7, 9]
    assert [f.kind for f in findings] == [OUTSIDE_ROOT, OUTSIDE_ROOT] and "leaves the dataset folder" in findings[
        0
    ].message
    common = dict(format="coco", root=root, split="ann.json", images="imgs", classes=None, keep_background=True)
    with pytest.raises(DataError, match="outside_root.*data.on_outside_root=allow"):
        prepare_split(**common, policies={})
    records, report = prepare_split(**common, policies={"on_outside_root": "allow"})
    assert len(records) == 4 and {f.action for f in report.findings} == {"allowed"}
    # YOLO list files: an absolute entry is refused the same way
    (root / "yolo" / "images").mkdir(parents=True)
    flat_image(root / "yolo" / "images" / "in.png")
    (root / "yolo" / "classes.txt").write_text("cat\n")
    (root / "yolo" / "list.txt").write_text(f"yolo/images/in.png\n{outside}\n")
    records, findings = load_split(format="yolo", root=root, split="yolo/list.txt")
    assert len(records) == 1 and findings[0].kind == OUTSIDE_ROOT


def test_outside_root_holds_for_a_relative_data_root(tmp_path, monkeypatch):
    from detect_ft.data.checks.findings import OUTSIDE_ROOT

    flat_image(tmp_path / "elsewhere" / "x.png")
    _coco(tmp_path / "data")
    data = json.loads((tmp_path / "data" / "ann.json").read_text())
    data["images"].append({"id": 11, "file_name": "../../elsewhere/x.png", "width": 64, "height": 48})
    (tmp_path / "data" / "ann.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    records, findings = load_split(format="coco", root="data", split="ann.json", images="imgs")
    assert len(records) == 2 and [f.kind for f in findings] == [OUTSIDE_ROOT]


@pytest.mark.parametrize("value", ["no", "0", "1", "", 2, -1, 0.5, [0], {"crowd": 0}])
def test_coco_iscrowd_of_the_wrong_type_is_one_line_naming_the_annotation(tmp_path, value):
    # "0" and "no" are truthy strings: read as flags they would silently make the box a crowd region
    _coco(tmp_path, annotations=[{"id": 4, "image_id": 7, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": value}])
    with pytest.raises(DataError) as info:
        load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    message = str(info.value)
    assert "\n" not in message and "ann.json" in message and "annotations[0] (id 4, image id 7)" in message
    assert "'iscrowd' must be 0 (a box) or 1 (a crowd region)" in message and "write 0 or 1" in message


@pytest.mark.parametrize("value", [0, 1, True, False, None, 1.0])
def test_coco_iscrowd_numbers_and_booleans_are_flags(tmp_path, value):
    _coco(tmp_path, annotations=[{"id": 4, "image_id": 7, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": value}])
    records, _ = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    assert records.records[0].iscrowd.tolist() == [bool(value)]


@pytest.mark.parametrize("field", ["width", "height"])
@pytest.mark.parametrize("value", ["wide", "64", -64, 64.5, True, [64], float("inf")])
def test_coco_image_size_of_the_wrong_type_is_one_line_naming_the_image(tmp_path, field, value):
    image = {"id": 7, "file_name": "sub/a.png", "width": 64, "height": 48, field: value}
    _coco(tmp_path, images=[image], annotations=[])
    with pytest.raises(DataError) as info:
        load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    message = str(info.value)
    assert "\n" not in message and "ann.json" in message and "images[0] (id 7)" in message
    assert f"'{field}' must be a positive whole number of pixels" in message and "remove the field" in message


def test_coco_unknown_image_size_is_read_from_the_header_and_whole_floats_are_sizes(tmp_path):
    images = [
        {"id": 7, "file_name": "sub/a.png", "width": None, "height": 48},
        {"id": 9, "file_name": "b.png", "width": 64.0, "height": 0},
        {"id": 11, "file_name": "b.png", "width": 128.0, "height": 96.0},
    ]
    _coco(tmp_path, images=images, annotations=[])
    records, _ = load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    assert [(r.width, r.height) for r in records.records] == [(64, 48), (64, 48), (128, 96)]


def test_coco_ids_given_as_text_name_the_entry_and_the_fix(tmp_path):
    _coco(tmp_path, annotations=[{"id": 4, "image_id": "7", "category_id": 5, "bbox": [1, 2, 3, 4]}])
    with pytest.raises(
        DataError, match=r"annotations\[0\] field 'image_id' must be a whole number \(not text\), got '7'"
    ):
        load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
    _coco(tmp_path, annotations=[{"id": 4, "image_id": 7, "category_id": "5", "bbox": [1, 2, 3, 4]}])
    with pytest.raises(
        DataError, match=r"annotations\[0\] \(id 4, image id 7\) field 'category_id'.*fix it in the file"
    ):
        load_split(format="coco", root=tmp_path, split="ann.json", images="imgs")
