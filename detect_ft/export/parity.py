"""Compare a PyTorch detector with its exported copy on the same images.

Two checks, both on the validation split:

* detection level: per image, each PyTorch detection is matched greedily (highest score first) to an
  unmatched ONNX detection with the same label and IoU >= 0.99; the report gives how many matched and the
  largest score and box-coordinate differences among the matches. Detections may legitimately go
  unmatched where scores are nearly tied at the ``detections_per_img`` cut-off or at the score
  threshold, so this part is reported, not enforced.
* dataset level: COCO mAP of both; the export fails when they differ by more than ``max_map_drop`` AP
  points (1 point = 0.01 mAP).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from detect_ft.data.records import DatasetRecords
from detect_ft.inference.predictions import PredictBatch, filter_predictions
from detect_ft.utils.boxes import box_iou
from detect_ft.utils.errors import DetectFTError


def pair_detections(reference: dict, candidate: dict, iou_thresh: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """Pair up two runtimes' detections of one image, one-to-one and greedily (not VOC ground-truth
    matching, which is :func:`detect_ft.evaluation.voc_eval.match_detections`).

    Args:
        reference, candidate: ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,).

    Returns:
        ``(ref_index, cand_index)`` int arrays of the matched pairs (same label, IoU >= ``iou_thresh`` or
        every coordinate within 0.01 px),
        reference detections taken in descending score order, each paired with its best free candidate.
    """
    ref_boxes = np.asarray(reference["boxes"]).reshape(-1, 4)
    cand_boxes = np.asarray(candidate["boxes"]).reshape(-1, 4)
    ref_labels = np.asarray(reference["labels"]).reshape(-1)
    cand_labels = np.asarray(candidate["labels"]).reshape(-1)
    if not len(ref_boxes) or not len(cand_boxes):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    iou = box_iou(ref_boxes, cand_boxes)
    # Zero-area boxes (untrained FCOS emits them) have no IoU; equal within 0.01 px counts as a match.
    iou[np.abs(ref_boxes[:, None, :] - cand_boxes[None, :, :]).max(-1) <= 0.01] = 1.0
    iou[ref_labels[:, None] != cand_labels[None, :]] = -1.0
    free = np.ones(len(cand_boxes), bool)
    pairs = []
    for i in np.argsort(-np.asarray(reference["scores"]).reshape(-1), kind="stable"):
        row = np.where(free, iou[i], -1.0)
        j = int(row.argmax())
        if row[j] >= iou_thresh:
            free[j] = False
            pairs.append((int(i), j))
    pairs_arr = np.asarray(pairs, np.int64).reshape(-1, 2)
    return pairs_arr[:, 0], pairs_arr[:, 1]


def compare_detections(reference: Sequence[dict], candidate: Sequence[dict], iou_thresh: float = 0.99) -> dict:
    """Detection-level agreement of two runtimes over the same images (see the module docstring).

    Returns:
        ``reference_detections``, ``candidate_detections``, ``matched``, ``match_rate`` (matched /
        reference detections, 1.0 when both are empty), ``max_score_diff``, ``max_box_diff`` (pixels,
        largest coordinate difference) over matched pairs (0.0 when none), ``iou_thresh``.
    """
    n_ref = n_cand = matched = 0
    score_diff = box_diff = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        i, j = pair_detections(ref, cand, iou_thresh)
        n_ref += len(np.asarray(ref["scores"]).reshape(-1))
        n_cand += len(np.asarray(cand["scores"]).reshape(-1))
        matched += len(i)
        if len(i):
            ds = np.abs(np.asarray(ref["scores"])[i] - np.asarray(cand["scores"])[j])
            db = np.abs(np.asarray(ref["boxes"]).reshape(-1, 4)[i] - np.asarray(cand["boxes"]).reshape(-1, 4)[j])
            score_diff = max(score_diff, float(ds.max()))
            box_diff = max(box_diff, float(db.max()))
    return {
        "reference_detections": n_ref,
        "candidate_detections": n_cand,
        "matched": matched,
        "match_rate": matched / n_ref if n_ref else (1.0 if not n_cand else 0.0),
        "max_score_diff": score_diff,
        "max_box_diff": box_diff,
        "iou_thresh": iou_thresh,
    }


def timed(predict_batch: PredictBatch, times: list[float]) -> PredictBatch:
    """Wrap ``predict_batch`` to append each call's wall time (seconds) to ``times``."""

    def wrapper(images: list[np.ndarray]) -> list[dict]:
        start = time.perf_counter()
        out = predict_batch(images)
        times.append(time.perf_counter() - start)
        return out

    return wrapper


def latency_summary(times: Sequence[float], warmup: int = 1) -> dict:
    """p50/p90/mean in milliseconds of per-call ``times``, the first ``warmup`` calls left out."""
    kept = np.asarray(times[warmup:] if len(times) > warmup else times, np.float64) * 1000.0
    if not kept.size:
        return {"p50_ms": None, "p90_ms": None, "mean_ms": None, "calls": 0}
    return {
        "p50_ms": float(np.percentile(kept, 50)),
        "p90_ms": float(np.percentile(kept, 90)),
        "mean_ms": float(kept.mean()),
        "calls": int(kept.size),
    }


def score_runtime(
    predict_batch: PredictBatch,
    dataset: DatasetRecords,
    *,
    score_thresh: float = 0.001,
    backend: str = "hotcoco",
    source: str = "predictions",
    progress: bool = False,
) -> tuple[list[dict], dict]:
    """Run ``predict_batch`` on every image of ``dataset`` one at a time (batch 1, so the timings are
    per-image latencies) and score it.

    Returns:
        ``(predictions, metrics)``: predictions filtered at ``score_thresh``; metrics are
        :func:`coco_metrics`'s plus ``latency`` (:func:`latency_summary`).
    """
    from detect_ft.evaluation.coco_eval import coco_metrics
    from detect_ft.evaluation.evaluator import predict_records

    times: list[float] = []
    raw = predict_records(
        timed(predict_batch, times),
        dataset,
        batch_size=1,
        workers=0,
        progress=progress,
        desc=f"predict + time ({source})",
    )
    preds = filter_predictions(raw, score_thresh)
    metrics = coco_metrics(dataset, preds, backend=backend, source=source)
    metrics["latency"] = latency_summary(times)
    return preds, metrics


def check_map_drop(reference_map: float | None, candidate_map: float | None, max_drop: float, what: str) -> float:
    """AP-point difference ``|candidate - reference| * 100``; raises when above ``max_drop``."""
    diff = abs((candidate_map or 0.0) - (reference_map or 0.0)) * 100.0
    if diff > max_drop:
        raise DetectFTError(
            f"{what}: mAP {100 * (candidate_map or 0):.2f} differs from PyTorch's {100 * (reference_map or 0):.2f} "
            f"by {diff:.2f} AP points (> export.max_map_drop={max_drop}); the exported graph does not reproduce "
            "the model, so nothing was written; report this with the model name and the opset, or raise "
            "export.max_map_drop"
        )
    return diff
