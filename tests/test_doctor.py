"""The dataset doctor: each problem kind found, policies applied, check-data exit codes; raccoon is clean."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import noise_image, voc_xml
from PIL import Image

from detect_ft.cli.main import main
from detect_ft.data.checks.doctor import check_split, prepare_split
from detect_ft.data.checks.findings import KINDS
from detect_ft.utils.errors import DataError

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "raccoon-voc"
ALL_DROP = {f"on_{kind}": "drop" for kind in KINDS}


def _sick_voc(root: Path) -> Path:
    """Eight images: clean, missing, truncated, wrong size, bad boxes, unknown class and a tiny box,
    a square one with an EXIF rotation, one whose path leaves the dataset."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)  # noise: the JPEG is long enough to cut
        cv2.imwrite(str(root / "JPEGImages" / f"im{i}.jpg"), image)
    (root / "JPEGImages" / "im1.jpg").unlink()
    data = (root / "JPEGImages" / "im2.jpg").read_bytes()
    (root / "JPEGImages" / "im2.jpg").write_bytes(data[: len(data) // 2])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show": a square image keeps its size
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
        root / "JPEGImages" / "im6.jpg", exif=exif.tobytes()
    )
    ok = ("cat", (5, 5, 20, 20))
    xmls = [
        voc_xml("im0.jpg", [ok]),
        voc_xml("im1.jpg", [ok]),
        voc_xml("im2.jpg", [ok]),
        voc_xml("im3.jpg", [ok], size=(80, 48)),
        voc_xml("im4.jpg", [ok, ("cat", (31, 10, 30, 20)), ("cat", (51, 41, 70, 60)), ok, ("cat", (70, 50, 90, 60))]),
        voc_xml("im5.jpg", [ok, ("ghost", (1, 1, 10, 10)), ("cat", (40, 30, 40, 30))]),
        voc_xml("im6.jpg", [ok], size=(48, 48)),
        voc_xml("../../outside.jpg", [ok]),
    ]
    for i, xml in enumerate(xmls):
        (root / "Annotations" / f"im{i}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"im{i}\n" for i in range(len(xmls))))
    return root


def test_each_problem_kind_is_found_with_its_default_action(tmp_path):
    root = _sick_voc(tmp_path)
    records, report = check_split(format="voc", root=root, split="train", classes=["cat"], decode=True)
    assert report.counts() == {
        "unknown_class": 1,
        "missing_image": 1,
        "unreadable_image": 1,
        "size_mismatch": 1,
        "degenerate_box": 1,
        "box_outside": 2,
        "duplicate_box": 1,
        "small_box": 1,
        "exif_orientation": 1,
        "outside_root": 1,
    }
    by_kind = {}
    for finding in report.findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    assert by_kind["missing_image"][0].file.endswith("im1.jpg")
    (unreadable,) = by_kind["unreadable_image"]  # cut in half: OpenCV alone would decode it with grey filling
    assert unreadable.file.endswith("im2.jpg") and "truncated" in unreadable.message
    assert all(f.action == "error" for f in by_kind["missing_image"] + by_kind["size_mismatch"] + [unreadable])
    (rotated,) = by_kind["exif_orientation"]  # the square image: no size mismatch could have caught it
    assert rotated.file.endswith("im6.jpg") and rotated.action == "error" and "square" in rotated.message
    (outside,) = by_kind["outside_root"]
    assert "../../outside.jpg" in outside.message and outside.action == "error"
    (small,) = by_kind["small_box"]
    assert small.file.endswith("im5.jpg") and small.box == [39, 29, 40, 30] and small.action == "kept"
    assert "80x48" in by_kind["size_mismatch"][0].message and "64x48" in by_kind["size_mismatch"][0].message
    (degenerate,) = by_kind["degenerate_box"]
    assert degenerate.box_index == 1 and list(degenerate.box) == [30, 9, 30, 20]
    assert degenerate.action == "dropped box" and "im4.jpg box 1" in degenerate.describe()
    outside = {f.box_index: f.action for f in by_kind["box_outside"]}
    assert outside[2] == "clipped" and outside[4].startswith("dropped box (nothing left")
    assert by_kind["duplicate_box"][0].box_index == 3
    assert by_kind["unknown_class"][0].action == "error" and "ghost" in by_kind["unknown_class"][0].message
    im4 = next(r for r in records.records if r.file_name == "im4.jpg")
    np.testing.assert_array_equal(im4.boxes, [[4, 4, 20, 20], [50, 40, 64, 48]])
    assert len(report.errors) == 6


def test_fast_mode_finds_the_same_file_problems_without_decoding(tmp_path):
    root = _sick_voc(tmp_path)
    _, fast = check_split(format="voc", root=root, split="train", classes=["cat"], policies=ALL_DROP)
    _, decoded = check_split(format="voc", root=root, split="train", classes=["cat"], policies=ALL_DROP, decode=True)
    assert fast.counts() == decoded.counts()
    (unreadable,) = [f for f in fast.findings if f.kind == "unreadable_image"]  # its header is intact: cut short
    assert unreadable.file.endswith("im2.jpg") and "truncated" in unreadable.message
    assert [f.describe() for f in fast.findings] == [f.describe() for f in decoded.findings]
    assert fast.errors == []


def test_prepare_split_raises_on_error_findings_and_cleans_on_drop(tmp_path):
    root = _sick_voc(tmp_path)
    kwargs = dict(format="voc", root=root, split="train", images="", classes=["cat"], keep_background=True)
    with pytest.raises(DataError) as info:
        prepare_split(**kwargs, policies={})
    message = str(info.value)
    assert "missing_image" in message and "im1.jpg" in message and "data.on_missing_image=drop" in message
    records, report = prepare_split(**kwargs, policies=ALL_DROP, decode=True)
    assert sorted(r.file_name for r in records.records) == ["im0.jpg", "im4.jpg", "im5.jpg"]
    assert records.num_boxes == 1 + 1 + 1  # im4 keeps its first box only (outside dropped, not clipped)
    assert (report.images, report.kept_images, report.kept_boxes) == (7, 3, 3)  # outside.jpg is never loaded


def test_keep_background_false_drops_images_emptied_by_policies(tmp_path):
    root = _sick_voc(tmp_path)
    (root / "Annotations" / "im0.xml").write_text(voc_xml("im0.jpg", [("cat", (31, 10, 30, 20))]))
    kwargs = dict(format="voc", root=root, split="train", images="", classes=["cat"], policies=ALL_DROP)
    records, _ = prepare_split(**kwargs, keep_background=True)
    assert "im0.jpg" in [r.file_name for r in records.records]
    records, _ = prepare_split(**kwargs, keep_background=False)
    assert "im0.jpg" not in [r.file_name for r in records.records]


def _config(tmp_path, root, **data) -> Path:
    lines = ["  format: voc", f"  root: {root}", "  train: train", "  classes: [cat]"]
    lines += [f"  {k}: {v}" for k, v in data.items()]
    path = tmp_path / "cfg.yaml"
    path.write_text("data:\n" + "\n".join(lines) + "\n")
    return path


def test_check_data_exit_codes_and_plots(tmp_path, capsys):
    root = _sick_voc(tmp_path / "voc")
    config = _config(tmp_path, root)
    assert main(["check-data", str(config), "--split", "train"]) == 1
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"-- {kind}:" in out
    assert "data.on_missing_image=error" in out and "im4.jpg box 2 [50, 40, 70, 60]" in out
    overrides = [f"data.on_{kind}=drop" for kind in KINDS]
    plots = tmp_path / "plots"
    assert main(["check-data", str(config), *overrides, "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "data.val not set, skipped" in out and "no finding at policy 'error'" in out
    assert sorted(p.name for p in plots.iterdir()) == ["train_histograms.png", "train_samples.png"]
    # a malformed annotation file is a one-line error (exit 2), not a traceback
    (root / "Annotations" / "im0.xml").write_text("<annotation>")
    assert main(["check-data", str(config)]) == 2
    assert "XML parse error" in capsys.readouterr().err


@pytest.mark.skipif(not RACCOON.is_dir(), reason="../shared/datasets/raccoon-voc is absent")
def test_raccoon_is_clean():
    for split, images, boxes in (("trainval", 200, 217), ("train", 160, None), ("val", 40, None)):
        records, report = check_split(
            format="voc", root=RACCOON, split=split, classes=["raccoon"], decode=split == "trainval"
        )
        assert report.findings == [] and len(records) == images
        if boxes is not None:
            assert records.num_boxes == boxes
    train, _ = check_split(format="voc", root=RACCOON, split="train")
    val, _ = check_split(format="voc", root=RACCOON, split="val")
    assert train.num_boxes + val.num_boxes == 217 and train.class_names == ["raccoon"]


@pytest.mark.skipif(not RACCOON.is_dir(), reason="../shared/datasets/raccoon-voc is absent")
def test_check_data_on_raccoon_exits_zero(tmp_path, capsys):
    config = tmp_path / "raccoon.yaml"
    config.write_text(f"data:\n  format: voc\n  root: {RACCOON}\n  train: train\n  val: val\n  classes: [raccoon]\n")
    assert main(["check-data", str(config)]) == 0
    out = capsys.readouterr().out
    assert "loaded 160 images" in out and "loaded 40 images" in out and "findings: none" in out


def test_only_boxes_outside_can_be_clipped():
    from detect_ft.config.schema import load_config
    from detect_ft.utils.errors import ConfigError

    assert load_config(None, ["data.on_box_outside=clip"]).data.on_box_outside == "clip"
    for key in ("on_degenerate_box", "on_duplicate_box", "on_missing_image", "on_unknown_class"):
        with pytest.raises(ConfigError, match=f"data.{key}"):
            load_config(None, [f"data.{key}=clip"])


def _tagged(path: Path, width: int, height: int, orientation: int) -> Path:
    """A noise JPEG of width x height stored pixels with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_reported_and_its_frame_is_a_config_choice(tmp_path, capsys):
    from detect_ft.data.dataset import DetectionDataset
    from detect_ft.data.image import read_image

    root = tmp_path / "voc"
    for folder in ("Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    _tagged(root / "JPEGImages" / "wide.jpg", 64, 48, 6)  # shown as 48x64
    _tagged(root / "JPEGImages" / "square.jpg", 48, 48, 6)  # shown as 48x48: the size tells nothing
    (root / "Annotations" / "wide.xml").write_text(voc_xml("wide.jpg", [("cat", (5, 5, 20, 40))], size=(48, 64)))
    (root / "Annotations" / "square.xml").write_text(voc_xml("square.jpg", [("cat", (5, 5, 20, 40))], size=(48, 48)))
    (root / "ImageSets" / "Main" / "train.txt").write_text("wide\nsquare\n")
    kwargs = dict(format="voc", root=root, split="train", images="", classes=["cat"], keep_background=True)

    # default: both tagged images are errors, the square one included
    with pytest.raises(DataError, match="(?s)exif_orientation.*square.jpg.*data.on_exif_orientation=apply"):
        prepare_split(**kwargs, policies={})
    config = _config(tmp_path, root)
    assert main(["check-data", str(config)]) == 1
    out = capsys.readouterr().out
    assert "-- exif_orientation: 2 (data.on_exif_orientation=error)" in out and "square.jpg" in out

    # apply: the boxes are in the displayed frame, images decode rotated
    records, report = prepare_split(**kwargs, policies={"on_exif_orientation": "apply"})
    assert {f.kind for f in report.findings} == {"exif_orientation"} and len(records) == 2
    image, boxes, _ = DetectionDataset(records).load(0)
    assert image.shape == (64, 48, 3)
    np.testing.assert_array_equal(image, read_image(root / "JPEGImages" / "wide.jpg"))

    # ignore: the boxes are in the stored frame; the wide image's annotated 48x64 is then a size mismatch
    records, report = prepare_split(**kwargs, policies={"on_exif_orientation": "ignore", "on_size_mismatch": "drop"})
    assert [r.file_name for r in records.records] == ["square.jpg"]
    (square,) = records.records
    stored = read_image(root / "JPEGImages" / "square.jpg", apply_orientation=False)
    np.testing.assert_array_equal(DetectionDataset(records).load(0)[0], stored)
    assert not np.array_equal(stored, read_image(root / "JPEGImages" / "square.jpg"))  # the frames differ

    # drop leaves both out
    with pytest.raises(DataError, match="no images left"):
        prepare_split(**kwargs, policies={"on_exif_orientation": "drop"})


def test_yolo_boxes_are_scaled_in_the_chosen_frame(tmp_path):
    _tagged(tmp_path / "train" / "images" / "a.jpg", 80, 40, 6)  # stored 80x40, shown 40x80
    (tmp_path / "train" / "labels").mkdir()
    (tmp_path / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    common = dict(format="yolo", root=tmp_path, split="train", images="", classes=None, keep_background=True)
    applied, _ = prepare_split(**common, policies={"on_exif_orientation": "apply"})
    ignored, _ = prepare_split(**common, policies={"on_exif_orientation": "ignore"})
    assert (applied.records[0].width, applied.records[0].height) == (40, 80)
    np.testing.assert_allclose(applied.records[0].boxes, [[10, 20, 30, 60]])
    assert (ignored.records[0].width, ignored.records[0].height) == (80, 40)
    np.testing.assert_allclose(ignored.records[0].boxes, [[20, 10, 60, 30]])


def test_boxes_far_smaller_than_their_class_are_reported(tmp_path, capsys):
    import json

    for i in range(5):
        noise_image(tmp_path / f"im{i}.jpg", 320, 240, seed=i)
    boxes = [[[20 + 10 * i, 20, 100, 100, 1]] for i in range(5)]
    boxes[3].append([200, 200, 1, 1, 1])  # a 1x1 box among 100 px boxes
    (tmp_path / "train.json").write_text(
        json.dumps(
            {
                "images": [{"id": i + 1, "file_name": f"im{i}.jpg", "width": 320, "height": 240} for i in range(5)],
                "annotations": [
                    {"id": 10 * i + j, "image_id": i + 1, "category_id": b[4], "bbox": b[:4]}
                    for i, bs in enumerate(boxes)
                    for j, b in enumerate(bs)
                ],
                "categories": [{"id": 1, "name": "cat"}],
            }
        )
    )
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  format: coco\n  root: {tmp_path}\n  train: train.json\n")
    assert main(["check-data", str(config)]) == 0  # reported, kept by default (data.on_small_box=keep)
    out = capsys.readouterr().out
    assert "-- small_box: 1 (data.on_small_box=keep)" in out
    assert "im3.jpg box 1 [200, 200, 201, 201]" in out and "far smaller than the 100 px typical" in out
    assert main(["check-data", str(config), "data.on_small_box=error"]) == 1
