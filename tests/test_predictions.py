"""detect_ft.inference.predictions: the detections format, the score filter and COCO results rows (torch-free; the
torch-blocked run with a real model is in tests/test_edge.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detect_ft.inference.predictions import (
    as_detections,
    coco_results,
    filter_detections,
    filter_predictions,
    open_onnx_session,
    session_metadata,
)
from detect_ft.utils.errors import DetectFTError


def test_as_detections_gives_fixed_dtypes_and_shapes_even_when_empty():
    det = as_detections({"boxes": [[1, 2, 3, 4]], "scores": [0.5], "labels": [2], "names": ["b"]})
    assert det["boxes"].dtype == np.float32 and det["boxes"].shape == (1, 4)
    assert (
        det["scores"].dtype == np.float32
        and det["labels"].dtype == np.int64
        and set(det) == {"boxes", "scores", "labels"}
    )
    empty = as_detections({"boxes": [], "scores": [], "labels": []})
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,) and empty["labels"].shape == (0,)


def test_filter_keeps_scores_at_or_above_the_threshold_in_order_and_leaves_the_input_alone():
    pred = {
        "boxes": np.arange(12, dtype=np.float64).reshape(3, 4),
        "scores": np.array([0.2, 0.5, 0.7]),
        "labels": np.array([1, 2, 1]),
    }
    kept = filter_detections(pred, 0.5)
    assert kept["scores"].tolist() == [0.5, 0.7] and kept["labels"].tolist() == [2, 1]
    assert kept["boxes"].tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]] and kept["boxes"].dtype == np.float64
    assert len(pred["scores"]) == 3
    assert [len(p["scores"]) for p in filter_predictions([pred, pred], 0.6)] == [1, 1]


def test_coco_results_rows_are_xywh_with_original_category_ids():
    det = {
        "boxes": np.array([[10.5, 20, 30.25, 60]], np.float32),
        "scores": np.array([0.25], np.float32),
        "labels": np.array([2]),
    }
    (row,) = coco_results(3, det, [5, 9])
    assert row == {"image_id": 3, "category_id": 9, "bbox": [10.5, 20.0, 19.75, 40.0], "score": 0.25}
    assert list(row) == ["image_id", "category_id", "bbox", "score"]
    (named,) = coco_results(3, det, [5, 9], file_name="a.jpg")
    assert list(named) == ["image_id", "file_name", "category_id", "bbox", "score"] and named["file_name"] == "a.jpg"
    json.dumps(named)  # plain Python numbers only
    assert coco_results(1, as_detections({"boxes": [], "scores": [], "labels": []}), [5, 9]) == []


def test_onnx_session_errors_name_the_file(tmp_path):
    with pytest.raises(DetectFTError, match=r"missing\.onnx not found"):
        open_onnx_session(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DetectFTError, match=r"junk\.onnx is not a loadable ONNX model"):
        open_onnx_session(tmp_path / "junk.onnx")


def test_session_metadata_refuses_a_foreign_format(tmp_path):
    class Session:
        def get_modelmeta(self):
            return type("Meta", (), {"custom_metadata_map": {"detect_ft": json.dumps({"format": 99})}})()

    with pytest.raises(DetectFTError, match=r"m\.onnx: metadata format '99' is not supported"):
        session_metadata(Session(), tmp_path / "m.onnx")
