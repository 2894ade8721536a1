"""Hostile or broken dataset files: symbolic links leaving the dataset, truncated images found before
training, images that break while training. Tiny data made on the spot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import noise_image, write_png_header

from detect_ft.data.checks.doctor import prepare_split
from detect_ft.data.checks.findings import OUTSIDE_ROOT
from detect_ft.data.convert import convert_split
from detect_ft.data.load import load_split
from detect_ft.utils.errors import DataError


def _coco_with_links(root: Path, secret: Path) -> Path:
    """A COCO split of three images: a plain file, a link to it (inside the dataset) and a link to ``secret``."""
    noise_image(root / "images" / "a.jpg")
    (root / "images" / "inside.jpg").symlink_to(root / "images" / "a.jpg")
    (root / "images" / "evil.jpg").symlink_to(secret)
    images = [
        {"id": i + 1, "file_name": name, "width": 64, "height": 48}
        for i, name in enumerate(("images/a.jpg", "images/inside.jpg", "images/evil.jpg"))
    ]
    categories = [{"id": 1, "name": "cat"}]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 20]} for i in (1, 2, 3)]
    (root / "train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root


def test_an_image_linked_to_a_file_outside_the_dataset_is_outside_root(tmp_path):
    secret = noise_image(tmp_path / "private" / "secret.jpg", seed=7)
    root = _coco_with_links(tmp_path / "data", secret)
    records, findings = load_split(format="coco", root=root, split="train.json")
    assert [r.file_name for r in records.records] == ["images/a.jpg", "images/inside.jpg"]
    (finding,) = findings
    assert finding.kind == OUTSIDE_ROOT and finding.file.endswith("evil.jpg")
    assert "symbolic link" in finding.message and str(secret) in finding.message
    common = dict(format="coco", root=root, split="train.json", images="", classes=None, keep_background=True)
    with pytest.raises(DataError, match="evil.jpg.*symbolic link"):
        prepare_split(**common, policies={})
    records, report = prepare_split(**common, policies={"on_outside_root": "drop"})
    assert len(records) == 2 and [f.action for f in report.findings] == ["dropped image"]
    records, _ = prepare_split(**common, policies={"on_outside_root": "allow"})
    assert len(records) == 3


def test_a_linked_data_root_and_links_that_stay_inside_are_fine(tmp_path):
    real = tmp_path / "real"
    noise_image(real / "JPEGImages" / "a.jpg")
    (real / "JPEGImages" / "b.jpg").symlink_to("a.jpg")  # relative link, inside
    (real / "Annotations").mkdir()
    for name in ("a", "b"):
        (real / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
            "<xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>"
        )
    (real / "ImageSets" / "Main").mkdir(parents=True)
    (real / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (tmp_path / "linked").symlink_to(real)  # data.root itself a link (a dataset on another disk)
    records, findings = load_split(format="voc", root=tmp_path / "linked", split="train")
    assert len(records) == 2 and findings == []


def test_voc_and_yolo_images_linked_out_of_the_dataset_are_outside_root(tmp_path):
    secret = noise_image(tmp_path / "private" / "secret.jpg", seed=7)
    voc = tmp_path / "voc"
    noise_image(voc / "JPEGImages" / "a.jpg")
    (voc / "JPEGImages" / "b.jpg").symlink_to(secret)
    (voc / "Annotations").mkdir()
    for name in ("a", "b"):  # no <size>: the header would be read, were the path not refused first
        (voc / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
            "<xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>"
        )
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    records, findings = load_split(format="voc", root=voc, split="train")
    assert [r.file_name for r in records.records] == ["a.jpg"]
    assert [f.kind for f in findings] == [OUTSIDE_ROOT] and findings[0].file.endswith("b.jpg")

    yolo = tmp_path / "yolo"
    noise_image(yolo / "train" / "images" / "a.jpg")
    (yolo / "train" / "images" / "b.jpg").symlink_to(secret)
    (yolo / "train" / "labels").mkdir()
    (yolo / "classes.txt").write_text("cat\n")
    records, findings = load_split(format="yolo", root=yolo, split="train")
    assert [r.file_name for r in records.records] == ["a.jpg"]
    assert [f.kind for f in findings] == [OUTSIDE_ROOT] and "symbolic link" in findings[0].message


def test_convert_never_copies_the_target_of_a_link_leaving_the_dataset(tmp_path):
    secret = noise_image(tmp_path / "private" / "secret.jpg", seed=7)
    root = _coco_with_links(tmp_path / "data", secret)
    out = tmp_path / "out"
    _, records, findings = convert_split(
        src_format="coco", root=root, split="train.json", dst_format="yolo", out_dir=out, name="train"
    )
    assert len(records) == 2 and [f.kind for f in findings] == [OUTSIDE_ROOT]
    copied = [p for p in (out / "train" / "images").rglob("*") if p.is_file()]
    assert sorted(p.name for p in copied) == ["a.jpg", "inside.jpg"]
    assert not any(p.read_bytes() == secret.read_bytes() for p in copied)


def test_a_symlinked_conversion_says_how_to_read_it(tmp_path, run_cli):
    root = _coco_with_links(tmp_path / "data", noise_image(tmp_path / "other.jpg"))
    (root / "images" / "evil.jpg").unlink()
    data = json.loads((root / "train.json").read_text())
    data["images"] = data["images"][:2]
    data["annotations"] = data["annotations"][:2]
    (root / "train.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    argv = ["convert", "--from", "coco", "--to", "yolo", "--root", root, "--split", "train.json", "--out", out]
    code, printed, _ = run_cli(*argv, "--image-mode", "symlink")
    assert code == 0 and "on_outside_root: allow" in printed
    assert os.path.islink(out / "train" / "images" / "images" / "a.jpg")
    _, findings = load_split(format="yolo", root=out, split="train")
    assert {f.kind for f in findings} == {OUTSIDE_ROOT}  # the links lead to the source dataset
    records, _ = load_split(format="yolo", root=out, split="train", allow_outside_root=True)
    assert len(records) == 2


# ---------------------------------------------------------------- files cut short, found before training


def _photo(path: Path, seed: int = 0) -> Path:
    """A 512x384 noise image, far longer than the tail the cheap check reads (JPEG ~300 KB)."""
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (384, 512, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else [])
    return path


def _cut(path: Path, keep: float = 0.8) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_the_cheap_check_finds_jpeg_and_png_files_cut_short_from_their_last_bytes(tmp_path):
    from detect_ft.data.image import TAIL_BYTES, UnreadableImageError, read_image, read_image_info

    whole = _photo(tmp_path / "whole.jpg")
    assert whole.stat().st_size > 2 * TAIL_BYTES
    trailer = _photo(tmp_path / "trailer.jpg")
    trailer.write_bytes(trailer.read_bytes() + b"\0" * (2 * TAIL_BYTES))  # a camera's data after the end marker
    small_png = noise_image(tmp_path / "small.png")
    big_png = _photo(tmp_path / "big.png")
    for path in (whole, trailer, small_png, big_png, write_png_header(tmp_path / "header.png", 4, 4)):
        assert read_image_info(path, check_end=True).width > 0

    for path, what in (
        (_cut(_photo(tmp_path / "cut.jpg")), "JPEG data ends before the end marker"),
        (_cut(noise_image(tmp_path / "cut_small.jpg"), 0.5), "JPEG data ends before the end marker"),
        (_cut(_photo(tmp_path / "cut.png")), "PNG data ends before the IEND chunk"),
    ):
        assert read_image_info(path).width > 0  # the header alone is intact
        with pytest.raises(UnreadableImageError, match=rf"{path.name} is truncated \(its {what}\)"):
            read_image_info(path, check_end=True)
        with pytest.raises(UnreadableImageError, match=rf"{path.name} is truncated \(its {what}\)"):
            read_image(path)  # the full decode says the same


def _coco_split(root: Path, names: list[str], sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    images, annotations = [], []
    for i, name in enumerate(names, 1):
        width, height = (sizes or {}).get(name, (512, 384))
        images.append({"id": i, "file_name": name, "width": width, "height": height})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 100, 80]})
    path = root / "train.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]})
    )
    return path


def test_training_data_names_every_bad_file_before_the_first_step(tmp_path):
    """What the trainer's _load_data calls: no pixel is decoded, yet every cut-short file and every size
    that disagrees with the annotation is found at once, not when the loader reaches it."""
    from detect_ft.data.split import SplitSpec, load_checked_split

    root = tmp_path / "data"
    for i in range(3):
        _photo(root / f"ok{i}.jpg", seed=i)
    _cut(_photo(root / "cut_a.jpg", seed=5))
    _cut(_photo(root / "cut_b.jpg", seed=6), 0.3)
    _cut(_photo(root / "cut_c.png", seed=7))
    _photo(root / "wrong_size.jpg", seed=8)
    names = ["ok0.jpg", "cut_a.jpg", "ok1.jpg", "cut_b.jpg", "cut_c.png", "wrong_size.jpg", "ok2.jpg"]
    _coco_split(root, names, {"wrong_size.jpg": (640, 480)})
    with pytest.raises(DataError) as info:
        load_checked_split(SplitSpec(format="coco", root=root), "train.json", None)
    message = str(info.value)
    assert message.startswith("4 dataset problem(s) at policy 'error'")
    for name in ("cut_a.jpg", "cut_b.jpg", "cut_c.png", "wrong_size.jpg"):
        assert name in message
    assert "data.on_unreadable_image=drop" in message and "data.on_size_mismatch=drop" in message

    dropping = SplitSpec(format="coco", root=root, policies={"on_unreadable_image": "drop", "on_size_mismatch": "drop"})
    records, report = load_checked_split(dropping, "train.json", None)
    assert [r.file_name for r in records.records] == ["ok0.jpg", "ok1.jpg", "ok2.jpg"]
    assert report.counts() == {"unreadable_image": 3, "size_mismatch": 1}
    assert {f.action for f in report.findings} == {"dropped image"}


def test_check_data_reports_files_cut_short_with_and_without_fast(tmp_path, run_cli):
    root = tmp_path / "data"
    _photo(root / "ok.jpg")
    _cut(_photo(root / "cut.jpg", seed=1))
    _coco_split(root, ["ok.jpg", "cut.jpg"])
    config = tmp_path / "cfg.yaml"
    config.write_text(f"data:\n  format: coco\n  root: {root}\n  train: train.json\n")
    outputs = []
    for fast in ([], ["--fast"]):
        code, out, _ = run_cli("check-data", config, *fast)
        assert code == 1 and "cut.jpg: is truncated (its JPEG data ends before the end marker)" in out
        outputs.append([line for line in out.splitlines() if "truncated" in line])
    assert outputs[0] == outputs[1]
