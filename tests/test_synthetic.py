"""The synthetic shapes generator: deterministic, clean, in every layout, objects of the promised sizes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detect_ft.data.checks.doctor import check_split
from detect_ft.data.load import load_split
from detect_ft.data.synthetic import SHAPES, make_synthetic_dataset, synthetic_image
from detect_ft.utils.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _digest(folder: Path, pattern: str) -> dict[str, str]:
    files = sorted(folder.rglob(pattern))
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path):
    kwargs = dict(num_train=6, num_val=3, image_size=64, classes=("star", "ring", "cross"))
    a = make_synthetic_dataset(tmp_path / "a", seed=5, **kwargs)
    b = make_synthetic_dataset(tmp_path / "b", seed=5, **kwargs)
    c = make_synthetic_dataset(tmp_path / "c", seed=6, **kwargs)
    assert _digest(a, "*.json") == _digest(b, "*.json") != _digest(c, "*.json")
    assert _digest(a, "*.jpg") == _digest(b, "*.jpg")
    # the validation images do not depend on how many training images were made
    d = make_synthetic_dataset(tmp_path / "d", seed=5, **{**kwargs, "num_train": 2})
    assert _digest(a / "images", "val_*.jpg") == _digest(d / "images", "val_*.jpg")


@pytest.mark.parametrize(
    "fmt,train,val", [("coco", "train.json", "val.json"), ("voc", "train", "val"), ("yolo", "train", "val")]
)
def test_every_layout_loads_clean(tmp_path, fmt, train, val):
    classes = ("circle", "square", "triangle")
    out = make_synthetic_dataset(tmp_path, num_train=8, num_val=4, image_size=(96, 64), classes=classes, format=fmt)
    records, report = check_split(format=fmt, root=out, split=train, classes=list(classes), decode=True)
    assert report.findings == [] and len(records) == 8 and records.class_names == list(classes)
    val_records, report = check_split(format=fmt, root=out, split=val, classes=list(classes), decode=True)
    assert report.findings == [] and len(val_records) == 4
    for record in records.records + val_records.records:
        assert (record.width, record.height) == (96, 64) and 1 <= record.num_boxes <= 4


def test_objects_are_sized_and_separated_as_promised():
    rng = np.random.default_rng(0)
    names = tuple(SHAPES)
    sides, counts = [], []
    for _ in range(60):
        image, boxes, labels = synthetic_image(rng, 160, 120, names)
        assert image.shape == (120, 160, 3) and image.dtype == np.uint8
        assert boxes.shape == (len(labels), 4) and set(labels.tolist()) <= set(range(1, len(names) + 1))
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 120).all()
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        sides += np.maximum(w, h).tolist()
        counts.append(len(labels))
        for i in range(len(boxes)):
            for j in range(i):
                iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                inter = max(iw, 0) * max(ih, 0)
                assert inter <= 0.05 * min(w[i] * h[i], w[j] * h[j]) + 1e-6
    assert 0.08 * 120 <= min(sides) and max(sides) <= 0.5 * 120 + 1  # triangles and squares fill 80-87% of 2r
    assert set(counts) == {1, 2, 3, 4}


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="distinct names"):
        make_synthetic_dataset(tmp_path, num_train=1, num_val=0, classes=("circle", "blob"))
    with pytest.raises(DataError, match="format"):
        make_synthetic_dataset(tmp_path, num_train=1, num_val=0, format="kitti")


def test_make_synthetic_script(tmp_path):
    out = tmp_path / "syn"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "datasets" / "make_synthetic.py"),
            "--out",
            str(out),
            "--train",
            "3",
            "--val",
            "2",
            "--size",
            "64",
            "--classes",
            "hexagon,star",
            "--format",
            "yolo",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "data.format=yolo" in result.stdout
    records, _ = load_split(format="yolo", root=out, split="val")
    assert len(records) == 2 and records.class_names == ["hexagon", "star"]


def test_small_objects_in_large_images():
    """``object_px`` sets the shapes' size in pixels (a small-object benchmark), ``count`` how many."""
    import numpy as np

    from detect_ft.data.synthetic import synthetic_image

    image, boxes, labels = synthetic_image(
        np.random.default_rng(0), 800, 600, ("circle", "square"), object_px=(12, 32), count=(20, 30)
    )
    assert image.shape == (600, 800, 3) and len(boxes) >= 15 and len(labels) == len(boxes)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert sides.min() >= 10 and sides.max() <= 34
