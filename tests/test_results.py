"""``Result`` objects: drawing, saving, COCO rows, and predictions written as a dataset that detect-ft's
own adapters read back unchanged (pseudo-labels) in all three formats."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import flat_image

from detect_ft.data.load import load_split
from detect_ft.inference.results import Result, write_results_dataset
from detect_ft.utils.errors import DetectFTError

CLASSES = ["cat", "dog"]


def _results(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    a = Result(
        boxes=[[4, 5, 20, 30], [30, 10, 60, 40]],
        scores=[0.9, 0.6],
        labels=[1, 2],
        class_names=CLASSES,
        category_ids=[3, 7],
        height=48,
        width=64,
        path=str(flat_image(src / "a.jpg", value=90)),
        conf=0.5,
    )
    b = Result(
        boxes=np.zeros((0, 4)),
        scores=[],
        labels=[],
        class_names=CLASSES,
        category_ids=[3, 7],
        height=40,
        width=50,
        path=str(flat_image(src / "b.png", 50, 40, value=90)),
        conf=0.5,
    )
    return [a, b]


def test_result_basics(tmp_path):
    a, b = _results(tmp_path)
    assert len(a) == 2 and a.names == ["cat", "dog"] and len(b) == 0
    assert "1 cat, 1 dog" in repr(a) and "no detections" in repr(b)
    rows = a.to_coco(image_id=5)
    assert rows[1] == {
        "image_id": 5,
        "category_id": 7,
        "bbox": [30.0, 10.0, 30.0, 30.0],
        "score": pytest.approx(0.6),
        "file_name": "a.jpg",
    }
    as_dict = a.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["detections"][0]["name"] == "cat" and as_dict["width"] == 64


def test_plot_and_save(tmp_path):
    a, _ = _results(tmp_path)
    drawn = a.plot()
    assert drawn.shape == (48, 64, 3) and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, cv2.imread(a.path)[..., ::-1])  # boxes drawn on a copy
    (tmp_path / "out").mkdir()
    out = a.save(tmp_path / "out" / "a_pred.png")
    assert out.exists() and cv2.imread(str(out)).shape == (48, 64, 3)
    with pytest.raises(DetectFTError, match="input image"):
        a.save(a.path)
    memory = Result(
        boxes=[[1, 1, 5, 5]],
        scores=[1.0],
        labels=[1],
        class_names=CLASSES,
        category_ids=[1, 2],
        height=8,
        width=8,
        image=np.zeros((8, 8, 3), np.uint8),
    )
    assert memory.plot().shape == (8, 8, 3)


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_predictions_round_trip_through_the_adapters(tmp_path, fmt):
    results = _results(tmp_path)
    out = tmp_path / f"pseudo_{fmt}"
    split = write_results_dataset(results, out, fmt)
    records, findings = load_split(format=fmt, root=out, split=str(split))
    assert records.class_names == CLASSES
    got = {r.file_name.rsplit("/", 1)[-1]: r for r in records.records}
    assert sorted(got) == ["a.jpg", "b.png"]
    for result in results:
        record = got[result.path.rsplit("/", 1)[-1]]
        assert (record.width, record.height) == (result.width, result.height)
        np.testing.assert_allclose(record.boxes, result.boxes, atol=1e-3)
        np.testing.assert_array_equal(record.labels, result.labels)
    if fmt == "coco":
        assert records.category_ids == [3, 7]
    assert (tmp_path / "photos" / "a.jpg").exists()  # sources untouched


def test_dataset_needs_image_files(tmp_path):
    memory = Result(
        boxes=[],
        scores=[],
        labels=[],
        class_names=CLASSES,
        category_ids=[1, 2],
        height=8,
        width=8,
        image=np.zeros((8, 8, 3), np.uint8),
    )
    with pytest.raises(DetectFTError, match="image files"):
        write_results_dataset([memory], tmp_path / "x", "coco")
    with pytest.raises(DetectFTError, match="unknown dataset format"):
        write_results_dataset(_results(tmp_path), tmp_path / "y", "csv")
