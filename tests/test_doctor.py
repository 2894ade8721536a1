"""The dataset doctor: each problem kind found, policies applied, check-data exit codes; raccoon is clean."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detect_ft.cli.main import main
from detect_ft.data.doctor import check_split, prepare_split
from detect_ft.data.findings import KINDS
from detect_ft.errors import DataError

RACCOON = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "raccoon-voc"
ALL_DROP = {f"on_{kind}": "drop" for kind in KINDS}


def _xml(filename, objects, size=(64, 48)):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>" \
           f"<height>{size[1]}</height></size>{objs}</annotation>"


def _sick_voc(root: Path) -> Path:
    """Six images: clean, missing, truncated, wrong size, bad boxes, unknown class."""
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
    ok = ("cat", (5, 5, 20, 20))
    xmls = [
        _xml("im0.jpg", [ok]),
        _xml("im1.jpg", [ok]),
        _xml("im2.jpg", [ok]),
        _xml("im3.jpg", [ok], size=(80, 48)),
        _xml("im4.jpg", [ok, ("cat", (31, 10, 30, 20)), ("cat", (51, 41, 70, 60)), ok, ("cat", (70, 50, 90, 60))]),
        _xml("im5.jpg", [ok, ("ghost", (1, 1, 10, 10))]),
    ]
    for i, xml in enumerate(xmls):
        (root / "Annotations" / f"im{i}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"im{i}\n" for i in range(6)))
    return root


def test_each_problem_kind_is_found_with_its_default_action(tmp_path):
    root = _sick_voc(tmp_path)
    records, report = check_split(format="voc", root=root, split="train", classes=["cat"], decode=True)
    assert report.counts() == {
        "unknown_class": 1, "missing_image": 2, "size_mismatch": 1, "degenerate_box": 1, "box_outside": 2,
        "duplicate_box": 1,
    }
    by_kind = {}
    for finding in report.findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    assert {f.file.split("/")[-1] for f in by_kind["missing_image"]} == {"im1.jpg", "im2.jpg"}
    assert all(f.action == "error" for f in by_kind["missing_image"] + by_kind["size_mismatch"])
    assert "80x48" in by_kind["size_mismatch"][0].message and "64x48" in by_kind["size_mismatch"][0].message
    degenerate, = by_kind["degenerate_box"]
    assert degenerate.box_index == 1 and list(degenerate.box) == [30, 9, 30, 20]
    assert degenerate.action == "dropped box" and "im4.jpg box 1" in degenerate.describe()
    outside = {f.box_index: f.action for f in by_kind["box_outside"]}
    assert outside[2] == "clipped" and outside[4].startswith("dropped box (nothing left")
    assert by_kind["duplicate_box"][0].box_index == 3
    assert by_kind["unknown_class"][0].action == "error" and "ghost" in by_kind["unknown_class"][0].message
    im4 = next(r for r in records.records if r.file_name == "im4.jpg")
    np.testing.assert_array_equal(im4.boxes, [[4, 4, 20, 20], [50, 40, 64, 48]])
    assert len(report.errors) == 4


def test_fast_mode_reads_headers_only(tmp_path):
    root = _sick_voc(tmp_path)
    _, report = check_split(format="voc", root=root, split="train", classes=["cat"], policies=ALL_DROP)
    assert report.counts()["missing_image"] == 1  # the truncated file has an intact header
    assert report.errors == []


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
    assert (report.images, report.kept_images, report.kept_boxes) == (6, 3, 3)


def test_keep_background_false_drops_images_emptied_by_policies(tmp_path):
    root = _sick_voc(tmp_path)
    (root / "Annotations" / "im0.xml").write_text(_xml("im0.jpg", [("cat", (31, 10, 30, 20))]))
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
        records, report = check_split(format="voc", root=RACCOON, split=split, classes=["raccoon"],
                                      decode=split == "trainval")
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
    from detect_ft.config import load_config
    from detect_ft.errors import ConfigError

    assert load_config(None, ["data.on_box_outside=clip"]).data.on_box_outside == "clip"
    for key in ("on_degenerate_box", "on_duplicate_box", "on_missing_image", "on_unknown_class"):
        with pytest.raises(ConfigError, match=f"data.{key}"):
            load_config(None, [f"data.{key}=clip"])
