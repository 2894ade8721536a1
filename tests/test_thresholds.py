"""Deployment thresholds: P/R/F1 against confidence with hand-computed answers, F1-optimal thresholds,
and the plots."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import detections

from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.plots import write_threshold_plots
from detect_ft.evaluation.thresholds import (
    GRID,
    best_threshold,
    class_thresholds,
    curves_at,
    threshold_curves,
)


def at(curves, conf):
    i = int(np.flatnonzero(np.isclose(GRID, conf))[0])
    return {k: float(v[i]) for k, v in curves.items()}


def test_curves_count_only_detections_at_or_above_the_threshold():
    # scores 0.9 TP, 0.8 FP, 0.3 TP, 0.2 ignored (difficult); 2 countable boxes
    curves = curves_at(np.array([0.3, 0.9, 0.2, 0.8]), np.array([1, 1, -1, 0]), npos=2)
    assert at(curves, 0.0) == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    assert at(curves, 0.3) == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})  # >= keeps 0.3
    assert at(curves, 0.5) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert at(curves, 0.85) == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    assert at(curves, 0.95) == pytest.approx({"precision": 1.0, "recall": 0.0, "f1": 0.0})  # nothing kept
    assert best_threshold(curves["f1"]) == pytest.approx(0.15)  # middle of the 0.00-0.30 plateau


def test_no_true_positive_has_no_threshold():
    curves = curves_at(np.array([0.9]), np.array([0]), npos=3)
    assert best_threshold(curves["f1"]) is None
    assert curves_at(np.zeros(0), np.zeros(0, np.int8), npos=0)["f1"].max() == 0


def _split():
    def rec(i, boxes, labels):
        return ImageRecord(image_path=f"/x/{i}.png", width=100, height=100, boxes=boxes, labels=labels, image_id=i)

    records = [rec(1, [[0, 0, 10, 10], [50, 50, 60, 60]], [1, 2]), rec(2, [[20, 20, 40, 40]], [1]), rec(3, [], [])]
    return DatasetRecords(records, ["cat", "dog"])


def test_per_class_thresholds_on_a_split():
    preds = [
        detections([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.4], [1, 2]),  # cat TP at 0.9, dog TP at 0.4
        detections([[20, 20, 40, 40], [70, 70, 80, 80]], [0.6, 0.7], [1, 1]),  # cat TP at 0.6, cat FP at 0.7
        detections([[1, 1, 5, 5]], [0.2], [2]),  # dog FP on a background image
    ]
    curves = threshold_curves(_split(), preds)
    # cat: TP 0.9, FP 0.7, TP 0.6 over 2 boxes
    cat = {k: np.asarray(v) for k, v in curves["per_class"]["cat"].items()}
    assert at(cat, 0.6) == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8}, abs=1e-5)  # JSON: 5 digits
    assert at(cat, 0.65) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5}, abs=1e-5)
    assert at(cat, 0.8) == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3}, abs=1e-5)
    assert curves["thresholds"]["cat"] == pytest.approx(0.3)  # middle of 0.00-0.60
    # dog: 1 TP at 0.4, 1 FP at 0.2: F1 1.0 on (0.2, 0.4]
    assert curves["thresholds"]["dog"] == pytest.approx(0.3)
    assert curves["overall_f1"] == pytest.approx(max(curves["overall"]["f1"]), abs=1e-5)
    assert class_thresholds(curves, ["cat", "dog"]) == pytest.approx([0.3, 0.3])


def test_class_without_ground_truth_falls_back_to_the_overall_threshold():
    curves = {"overall_threshold": 0.42, "thresholds": {"cat": 0.3, "dog": None}}
    assert class_thresholds(curves, ["cat", "dog"]) == [0.3, 0.42]
    assert class_thresholds({"overall_threshold": None, "thresholds": {}}, ["cat"]) == [0.5]


def test_plots_are_written(tmp_path):
    preds = [detections([[0, 0, 10, 10]], [0.9], [1]), detections([], [], []), detections([], [], [])]
    curves = threshold_curves(_split(), preds)
    paths = write_threshold_plots(curves, tmp_path)
    assert [p.name for p in paths] == ["f1_curve.png", "precision_curve.png", "recall_curve.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
