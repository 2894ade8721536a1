"""The evaluator on the real raccoon-voc split, through the data helper's loader (skips without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detect_ft.evaluation.coco_eval import coco_metrics
from detect_ft.evaluation.evaluator import predict_records, score_predictions

RACCOON = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "raccoon-voc"
pytestmark = pytest.mark.skipif(not RACCOON.is_dir(), reason="../shared/datasets/raccoon-voc is absent")


@pytest.fixture(scope="module")
def val():
    from detect_ft.data.checks.doctor import prepare_split

    records, _ = prepare_split(
        format="voc", root=RACCOON, split="val", images="", classes=None, keep_background=True, policies={}
    )
    return records


def test_ground_truth_as_predictions_scores_one(val):
    assert len(val) == 40 and val.class_names == ["raccoon"]
    preds = [{"boxes": r.boxes, "scores": np.ones(r.num_boxes), "labels": r.labels} for r in val.records]
    metrics = score_predictions(val, preds)
    assert metrics["map"] == pytest.approx(1.0) and metrics["voc_map50"] == pytest.approx(1.0)
    assert metrics["num_ground_truth"] == val.num_boxes


def test_jittered_boxes_agree_across_backends_and_read_real_images(val):
    rng = np.random.default_rng(0)
    preds = []
    for r in val.records:
        size = np.tile(r.boxes[:, 2:] - r.boxes[:, :2], 2)
        boxes = r.boxes + rng.normal(0, 0.1, r.boxes.shape) * size
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        preds.append({"boxes": boxes, "scores": rng.random(r.num_boxes), "labels": r.labels})
    ref = coco_metrics(val, preds, backend="pycocotools")
    assert 0.2 < ref["map"] < 0.9
    assert coco_metrics(val, preds, backend="hotcoco")["map"] == ref["map"]
    # Decoding the real JPEGs: sizes agree with the annotations (else predict_records raises).
    subset = type(val)(val.records[:4], val.class_names, val.category_ids, val.source)
    shapes = []

    def record_shapes(images):
        shapes.extend(image.shape for image in images)
        return [{"boxes": [], "scores": [], "labels": []} for _ in images]

    predict_records(record_shapes, subset, workers=2, progress=False)
    assert shapes == [(r.height, r.width, 3) for r in subset.records]
