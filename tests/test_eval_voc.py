"""VOC-style AP against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.voc_eval import average_precision, box_iou, voc_metrics


def _pred(boxes=(), scores=(), labels=()):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "scores": np.asarray(scores, np.float32),
            "labels": np.asarray(labels, np.int64)}


def _hand_case(difficult: bool):
    """Image 1: a at [0,0,10,10] and [20,20,30,30]; image 2: a at [0,0,10,10] and a (difficult?) at
    [50,50,60,60]. Detections by score: hit g1, hit the difficult box, duplicate of g1, hit g3, miss."""
    records = [
        ImageRecord("/x/1.jpg", 100, 100, [[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], image_id=1),
        ImageRecord("/x/2.jpg", 200, 200, [[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1],
                    difficult=[False, difficult], image_id=2),
    ]
    preds = [
        _pred([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.7], [1, 1]),
        _pred([[50, 50, 60, 60], [0, 0, 10, 10], [100, 100, 110, 110]], [0.8, 0.6, 0.5], [1, 1, 1]),
    ]
    return DatasetRecords(records, ["a", "b"]), preds


def test_difficult_boxes_are_neither_true_nor_false_positives():
    # Counted: TP, FP, TP, FP with 3 positives -> precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3.
    dataset, preds = _hand_case(difficult=True)
    m = voc_metrics(dataset, preds)
    assert m["per_class"]["a"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)  # all-point area = 5/9
    assert m["num_ground_truth"] == {"a": 3, "b": 0}
    assert m["per_class"]["b"] is None and m["map50"] == pytest.approx(5 / 9)
    # 11-point: recall >= 0, .1, .2, .3 -> 1; >= .4, .5, .6 -> 2/3; >= .7 .. 1.0 -> 0.
    assert voc_metrics(dataset, preds, use_07_metric=True)["per_class"]["a"] == pytest.approx(6 / 11)


def test_without_the_difficult_flag_the_box_counts():
    # TP, TP, FP, TP, FP with 4 positives: area = .25 * 1 + .25 * 1 + .25 * .75 = 0.6875.
    dataset, preds = _hand_case(difficult=False)
    assert voc_metrics(dataset, preds)["per_class"]["a"] == pytest.approx(0.6875)


def test_class_without_detections_scores_zero_and_mean_covers_classes_with_ground_truth():
    records = [ImageRecord("/x/1.jpg", 100, 100, [[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2], image_id=1)]
    dataset = DatasetRecords(records, ["a", "b", "c"])
    m = voc_metrics(dataset, [_pred([[0, 0, 10, 10], [60, 60, 70, 70]], [0.9, 0.8], [1, 3])])
    assert m["per_class"] == {"a": 1.0, "b": 0.0, "c": None}
    assert m["map50"] == pytest.approx(0.5)


def test_no_detections_and_no_ground_truth():
    dataset = DatasetRecords([ImageRecord("/x/1.jpg", 100, 100, image_id=1)], ["a"])
    assert voc_metrics(dataset, [_pred()]) == {"map50": None, "per_class": {"a": None},
                                               "num_ground_truth": {"a": 0}, "metric": "voc10", "iou": 0.5}


def test_iou_must_exceed_the_threshold():
    # [0,0,10,10] vs [0,0,10,20]: IoU exactly 0.5 is not a match in the devkit (ovmax > 0.5).
    dataset = DatasetRecords([ImageRecord("/x/1.jpg", 100, 100, [[0, 0, 10, 20]], [1], image_id=1)], ["a"])
    assert box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, 10, 20.0]]))[0, 0] == pytest.approx(0.5)
    assert voc_metrics(dataset, [_pred([[0, 0, 10, 10]], [0.9], [1])])["per_class"]["a"] == 0.0
    assert voc_metrics(dataset, [_pred([[0, 0, 10, 11]], [0.9], [1])])["per_class"]["a"] == 1.0


def test_average_precision_interpolates_the_envelope():
    precision, recall = np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])
    assert average_precision(precision, recall) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(precision, recall, use_07_metric=True) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
