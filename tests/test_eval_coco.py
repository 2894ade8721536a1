"""COCO-style metrics: backends agree exactly, and the edge cases are scored as pycocotools does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import detections

from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.coco_eval import (
    BACKENDS,
    STAT_KEYS,
    coco_ground_truth,
    coco_metrics,
    predictions_to_coco_results,
    write_coco_results,
)
from detect_ft.utils.errors import ConfigError, DetectFTError

ALL_BACKENDS = list(BACKENDS)


def _dataset(records, names=("cat", "dog"), category_ids=None):
    for i, r in enumerate(records):
        r.image_id = r.image_id or i + 1
    return DatasetRecords(list(records), list(names), list(category_ids or []), source="test.json")


def _image(boxes=(), labels=(), iscrowd=None, width=200, height=200, image_id=0):
    return ImageRecord(
        image_path=f"/x/{image_id}.jpg",
        width=width,
        height=height,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=labels,
        iscrowd=iscrowd if iscrowd is not None else [],
        image_id=image_id,
    )


def _random_case(seed=0):
    """Crowd regions, images without ground truth, a class without ground truth, >100 dets on one image."""
    rng = np.random.default_rng(seed)
    records, preds = [], []
    for i in range(40):
        n = 0 if i % 7 == 0 else int(rng.integers(1, 6))
        xy = rng.uniform(0, 150, (n, 2))
        wh = np.exp(rng.uniform(np.log(4), np.log(120), (n, 2)))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(1, 3, n)  # class 3 never has ground truth
        crowd = rng.random(n) < 0.15
        if i == 5:
            crowd[:] = True  # an image holding only crowd ground truth
        records.append(_image(boxes, labels, crowd, width=300, height=300, image_id=i + 1))
        m = 130 if i == 3 else int(rng.integers(0, 12))
        det_xy = rng.uniform(0, 150, (m, 2))
        det = np.concatenate([det_xy, det_xy + rng.uniform(4, 100, (m, 2))], 1)
        hits = boxes + rng.normal(0, 3, boxes.shape)
        hits[:, 2:] = np.maximum(hits[:, 2:], hits[:, :2] + 1)
        preds.append(
            detections(np.concatenate([hits, det]), rng.random(n + m), np.concatenate([labels, rng.integers(1, 4, m)]))
        )
    return _dataset(records, ("a", "b", "c"), [5, 2, 9]), preds


def test_backends_give_identical_stats_and_per_class_ap():
    dataset, preds = _random_case()
    results = {b: coco_metrics(dataset, preds, backend=b) for b in ALL_BACKENDS}
    ref = results["pycocotools"]
    assert 0.05 < ref["map"] < 0.95  # a case where matching decisions matter
    assert ref["per_class"]["c"] is None
    for key in STAT_KEYS + ("per_class", "per_class_map50", "num_detections"):
        assert results["hotcoco"][key] == ref[key], key  # bit for bit
        # faster_coco_eval's C++ accumulate sums in another order: equal up to float rounding.
        assert _close(results["faster_coco_eval"][key], ref[key]), key


def _close(a, b, tol=1e-12):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tol


def test_perfect_predictions_and_empty_size_buckets_are_none():
    records = [
        _image([[10, 10, 50, 50]], [1], image_id=1),
        _image([[20, 20, 60, 70], [100, 100, 140, 140]], [2, 1], image_id=2),
    ]
    dataset = _dataset(records)
    preds = [detections(r.boxes, np.ones(r.num_boxes), r.labels) for r in records]
    for backend in ALL_BACKENDS:
        m = coco_metrics(dataset, preds, backend=backend)
        assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
        assert m["map_medium"] == pytest.approx(1.0)
        assert m["map_small"] is None and m["map_large"] is None and m["mar_small"] is None
        assert m["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
        assert m["num_images"] == 2 and m["num_detections"] == 3 and m["num_ground_truth"] == 3


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_no_detections_at_all_scores_zero(backend):
    dataset = _dataset([_image([[10, 10, 50, 50]], [1]), _image()])
    m = coco_metrics(dataset, [detections(), detections()], backend=backend)
    assert m["map"] == 0.0 and m["mar_100"] == 0.0 and m["num_detections"] == 0
    assert m["per_class"] == {"cat": 0.0, "dog": None}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_class_without_ground_truth_is_none_and_left_out_of_the_mean(backend):
    dataset = _dataset([_image([[10, 10, 50, 50]], [1])])
    preds = [detections([[10, 10, 50, 50], [100, 100, 150, 150]], [0.9, 0.95], [1, 2])]
    m = coco_metrics(dataset, preds, backend=backend)
    assert m["per_class"]["dog"] is None and m["per_class_map50"]["dog"] is None
    assert m["map"] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_detection_on_a_crowd_only_image_is_ignored(backend):
    gt_box, crowd_box = [[10, 10, 60, 60]], [[0, 0, 150, 150]]
    det = [detections(gt_box, [0.5], [1]), detections([[20, 20, 80, 80]], [0.9], [1])]
    crowd = _dataset([_image(gt_box, [1]), _image(crowd_box, [1], iscrowd=[True])])
    assert coco_metrics(crowd, det, backend=backend)["map"] == pytest.approx(1.0)
    # Control: the same box as an ordinary ground truth makes the high-scoring detection a false positive.
    plain = _dataset([_image(gt_box, [1]), _image(crowd_box, [1], iscrowd=[False])])
    assert coco_metrics(plain, det, backend=backend)["map"] < 0.9


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_only_the_top_100_detections_per_image_and_class_count(backend):
    junk = [[150 + i % 10, 150 + i // 10, 152 + i % 10, 152 + i // 10] for i in range(100)]
    junk_scores = np.linspace(0.9, 0.5, 100)
    hit = [[10, 10, 60, 60]]
    dataset = _dataset([_image(hit, [1], width=300, height=300)])
    beyond = [detections(junk + hit, np.append(junk_scores, 0.4), [1] * 101)]  # the hit ranks 101st
    within = [detections(junk[:99] + hit, np.append(junk_scores[:99], 0.4), [1] * 100)]  # ranks 100th
    assert coco_metrics(dataset, beyond, backend=backend)["mar_100"] == 0.0
    assert coco_metrics(dataset, within, backend=backend)["mar_100"] == pytest.approx(1.0)


def test_unknown_category_raises_a_clear_error():
    dataset = _dataset([_image([[10, 10, 50, 50]], [1])])
    with pytest.raises(DetectFTError, match=r"label 3 is not a class.*labels 1\.\.2"):
        coco_metrics(dataset, [detections([[10, 10, 50, 50]], [0.9], [3])])
    with pytest.raises(DetectFTError, match="label 0"):
        coco_metrics(dataset, [detections([[10, 10, 50, 50]], [0.9], [0])])


def test_xywh_boxes_are_caught():
    records = [_image([[100, 100, 140, 150]], [1])]
    xywh = [detections([[100, 100, 40, 50]], [0.9], [1])]
    with pytest.raises(DetectFTError, match=r"x2 < x1.*xyxy.*x2 = x \+ w"):
        coco_metrics(_dataset(records), xywh)


def test_normalised_boxes_are_caught():
    records = [_image([[100, 100, 140, 150]], [1], width=640, height=480) for _ in range(3)]
    preds = [detections([[0.1, 0.2, 0.3, 0.4]] * 4, [0.9] * 4, [1] * 4) for _ in range(3)]
    with pytest.raises(DetectFTError, match="normalised"):
        coco_metrics(_dataset(records), preds)


def test_prediction_count_and_shape_mistakes():
    dataset = _dataset([_image([[10, 10, 50, 50]], [1])])
    with pytest.raises(DetectFTError, match="1 images"):
        coco_metrics(dataset, [])
    with pytest.raises(DetectFTError, match="lacks scores"):
        coco_metrics(dataset, [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}])
    with pytest.raises(DetectFTError, match="NaN"):
        coco_metrics(dataset, [detections([[np.nan, 1, 2, 3]], [0.5], [1])])
    with pytest.raises(ConfigError, match="eval.backend"):
        coco_metrics(dataset, [detections()], backend="detectron")


def test_results_use_original_category_ids_and_round_trip_through_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, preds = _random_case(seed=1)
    results = predictions_to_coco_results(dataset, preds, score_thresh=0.2)
    assert {r["category_id"] for r in results} <= {5, 2, 9}
    first = preds[0]["boxes"][preds[0]["scores"] >= 0.2][0].astype(np.float64)
    assert results[0]["bbox"] == pytest.approx([first[0], first[1], first[2] - first[0], first[3] - first[1]])
    write_coco_results(tmp_path / "predictions.json", dataset, preds, score_thresh=0.2)
    (tmp_path / "gt.json").write_text(json.dumps(coco_ground_truth(dataset)))
    gt = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "predictions.json")), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    ours = coco_metrics(dataset, preds, score_thresh=0.2)
    assert ours["map"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert ours["num_detections"] == len(results)


def test_per_class_follows_unsorted_category_ids():
    records = [_image([[10, 10, 50, 50], [80, 80, 120, 120]], [1, 2])]
    dataset = _dataset(records, ("a", "b"), [7, 3])  # precision's class axis is sorted by id: b, a
    m = coco_metrics(dataset, [detections([[10, 10, 50, 50]], [0.9], [1])])
    assert m["per_class"] == {"a": pytest.approx(1.0), "b": 0.0}
    assert list(m["per_class"]) == ["a", "b"]


def test_bench_eval_tool_finds_identical_stats(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "bench_eval.py"
    spec = importlib.util.spec_from_file_location("bench_eval", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--images", "40", "--classes", "5", "--backends", "hotcoco", "pycocotools"]) == 0
    out = capsys.readouterr().out
    assert out.count("identical") == 2 and "4000 detections" in out
