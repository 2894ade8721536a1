"""VOC-style AP against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import detections

from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.voc_eval import average_precision, voc_metrics
from detect_ft.utils.boxes import box_iou


def _hand_case(difficult: bool):
    """Image 1: a at [0,0,10,10] and [20,20,30,30]; image 2: a at [0,0,10,10] and a (difficult?) at
    [50,50,60,60]. Detections by score: hit g1, hit the difficult box, duplicate of g1, hit g3, miss."""
    records = [
        ImageRecord("/x/1.jpg", 100, 100, [[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], image_id=1),
        ImageRecord(
            "/x/2.jpg", 200, 200, [[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1], difficult=[False, difficult], image_id=2
        ),
    ]
    preds = [
        detections([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.7], [1, 1]),
        detections([[50, 50, 60, 60], [0, 0, 10, 10], [100, 100, 110, 110]], [0.8, 0.6, 0.5], [1, 1, 1]),
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
    m = voc_metrics(dataset, [detections([[0, 0, 10, 10], [60, 60, 70, 70]], [0.9, 0.8], [1, 3])])
    assert m["per_class"] == {"a": 1.0, "b": 0.0, "c": None}
    assert m["map50"] == pytest.approx(0.5)


def test_no_detections_and_no_ground_truth():
    dataset = DatasetRecords([ImageRecord("/x/1.jpg", 100, 100, image_id=1)], ["a"])
    assert voc_metrics(dataset, [detections()]) == {
        "map50": None,
        "per_class": {"a": None},
        "num_ground_truth": {"a": 0},
        "metric": "voc10",
        "iou": 0.5,
    }


def test_iou_must_exceed_the_threshold():
    # [0,0,10,10] vs [0,0,10,20]: IoU exactly 0.5 is not a match in the devkit (ovmax > 0.5).
    dataset = DatasetRecords([ImageRecord("/x/1.jpg", 100, 100, [[0, 0, 10, 20]], [1], image_id=1)], ["a"])
    assert box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, 10, 20.0]]))[0, 0] == pytest.approx(0.5)
    assert voc_metrics(dataset, [detections([[0, 0, 10, 10]], [0.9], [1])])["per_class"]["a"] == 0.0
    assert voc_metrics(dataset, [detections([[0, 0, 10, 11]], [0.9], [1])])["per_class"]["a"] == 1.0


def test_average_precision_interpolates_the_envelope():
    precision, recall = np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])
    assert average_precision(precision, recall) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(precision, recall, use_07_metric=True) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def _devkit_ap(dataset, preds, label, iou=0.5):
    """The devkit loop, literally: one class, detections of all images ranked by score."""
    dets = [
        (s, i, d) for i, p in enumerate(preds) for d, s in enumerate(p["scores"].tolist()) if p["labels"][d] == label
    ]
    dets.sort(key=lambda x: -x[0])  # stable: ties keep image, then detection order
    taken = {i: np.zeros(r.num_boxes, bool) for i, r in enumerate(dataset.records)}
    npos = sum(int(((r.labels == label) & ~r.difficult & ~r.iscrowd).sum()) for r in dataset.records)
    tp, fp = [], []
    for _, i, d in dets:
        r = dataset.records[i]
        mask = np.flatnonzero(r.labels == label)
        if not len(mask):
            tp.append(0), fp.append(1)
            continue
        ov = box_iou(preds[i]["boxes"][d : d + 1].astype(np.float64), r.boxes[mask].astype(np.float64))[0]
        g = mask[int(np.argmax(ov))]
        if ov.max() > iou and (r.difficult[g] or r.iscrowd[g]):
            continue
        hit = ov.max() > iou and not taken[i][g]
        if hit:
            taken[i][g] = True
        tp.append(int(hit)), fp.append(int(not hit))
    if npos == 0:
        return None
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return average_precision(tp / np.maximum(tp + fp, 1e-12), tp / npos)


def test_per_image_matching_equals_the_devkit_loop_with_ties():
    rng = np.random.default_rng(3)
    records, preds = [], []
    for i in range(30):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1)
        labels = rng.integers(1, 4, n)
        records.append(
            ImageRecord(
                f"/x/{i}.jpg",
                128,
                128,
                boxes,
                labels,
                difficult=rng.random(n) < 0.2,
                iscrowd=rng.random(n) < 0.1,
                image_id=i + 1,
            )
        )
        m = int(rng.integers(0, 10))
        pick = rng.integers(0, max(n, 1), m)
        det = boxes[pick] + rng.normal(0, 4, (m, 4)) if n else rng.uniform(0, 60, (m, 4))
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        scores = rng.choice([0.2, 0.5, 0.9], m)  # many exact ties
        det_labels = np.where(rng.random(m) < 0.8, labels[pick], rng.integers(1, 4, m)) if n else np.ones(m)
        preds.append(detections(det, scores, det_labels))
    dataset = DatasetRecords(records, ["a", "b", "c"])
    m = voc_metrics(dataset, preds)
    for label, name in enumerate(dataset.class_names, start=1):
        expected = _devkit_ap(dataset, [{k: np.asarray(v) for k, v in p.items()} for p in preds], label)
        assert m["per_class"][name] == pytest.approx(expected, abs=1e-12)
    assert 0.1 < m["map50"] < 0.95
