"""Pascal VOC-style AP at one IoU threshold: 11-point (VOC2007) or all-point area (VOC2010+).

The protocol of the VOC devkit: per class, detections of all images sorted by descending score; each
is a true positive if its best-overlapping ground-truth box (IoU > threshold) is not yet taken, a false
positive otherwise. A detection whose best match is a ``difficult`` (or crowd) box counts as neither,
and such boxes are not in the recall denominator. Boxes are continuous xyxy pixels, so IoU has no
devkit-style "+1" on widths.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from detect_ft.data.records import DatasetRecords
from detect_ft.evaluation.checks import check_predictions, ground_truth_ignore


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) between xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def match_class(
    dataset: DatasetRecords, predictions: list[dict], label: int, *, iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy VOC matching of one class's detections over the whole split.

    Args:
        predictions: checked predictions (see :func:`check_predictions`), same order as the records.
        label: the class, 1..K.

    Returns:
        ``scores`` (D,) in descending order, ``tp`` (D,) int8 with 1 = true positive, 0 = false
        positive, -1 = ignored (matched a difficult/crowd box), and the number of countable ground-truth
        boxes (``npos``).
    """
    image_idx, det_idx, scores = [], [], []
    gts, npos = [], 0
    for i, (record, pred) in enumerate(zip(dataset.records, predictions)):
        mask = record.labels == label
        ignore = ground_truth_ignore(record)[mask]
        gts.append((record.boxes[mask].astype(np.float64), ignore))
        npos += int((~ignore).sum())
        sel = np.flatnonzero(pred["labels"] == label)
        image_idx.append(np.full(len(sel), i))
        det_idx.append(sel)
        scores.append(pred["scores"][sel])
    image_idx, det_idx, scores = np.concatenate(image_idx), np.concatenate(det_idx), np.concatenate(scores)
    order = np.argsort(-scores, kind="stable")
    image_idx, det_idx, scores = image_idx[order], det_idx[order], scores[order]
    tp = np.zeros(len(scores), np.int8)
    ious = {}  # per image IoU matrix (dets of this class x gts), computed once
    taken = [np.zeros(len(g[0]), bool) for g in gts]
    for rank, (i, d) in enumerate(zip(image_idx.tolist(), det_idx.tolist())):
        gt_boxes, gt_ignore = gts[i]
        if not len(gt_boxes):
            continue
        if i not in ious:
            ious[i] = box_iou(predictions[i]["boxes"], gt_boxes)
        overlaps = ious[i][d]
        best = int(np.argmax(overlaps))
        if overlaps[best] > iou:
            if gt_ignore[best]:
                tp[rank] = -1
            elif not taken[i][best]:
                taken[i][best] = True
                tp[rank] = 1
    return scores, tp, npos


def precision_recall(tp: np.ndarray, npos: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall (D',) over the non-ignored detections of :func:`match_class`."""
    counted = tp[tp >= 0]
    tps = np.cumsum(counted == 1)
    fps = np.cumsum(counted == 0)
    recall = tps / max(npos, 1)
    precision = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
    return precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray, *, use_07_metric: bool = False) -> float:
    """AP of a precision/recall curve: VOC2007 11-point interpolation, or the VOC2010+ area under the
    monotone (interpolated) precision envelope."""
    if use_07_metric:
        points = [precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.arange(0.0, 1.1, 0.1)]
        return float(np.mean(points))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_metrics(
    dataset: DatasetRecords,
    predictions: list[dict],
    *,
    use_07_metric: bool = False,
    iou: float = 0.5,
    source: str = "predictions",
) -> dict:
    """VOC-style AP per class and their mean.

    Args:
        dataset: the split; boxes xyxy absolute pixels, labels 1..K, ``difficult`` flags honoured.
        predictions: one dict per record: ``boxes`` (N, 4) xyxy absolute pixels, ``scores``, ``labels``.
        use_07_metric: 11-point VOC2007 AP instead of the all-point area.

    Returns:
        ``map50`` (mean over classes with ground truth; None if none has any), ``per_class``
        ({class name: AP, or None for a class without countable ground truth}), ``num_ground_truth``
        ({class name: countable boxes}), ``metric`` ("voc07" or "voc10") and ``iou``.
    """
    preds = check_predictions(dataset, predictions, source=source)
    per_class: dict[str, Optional[float]] = {}
    counts: dict[str, int] = {}
    for label, name in enumerate(dataset.class_names, start=1):
        _, tp, npos = match_class(dataset, preds, label, iou=iou)
        counts[name] = npos
        if npos == 0:
            per_class[name] = None  # AP is undefined, not 0: no detector could score here
            continue
        precision, recall = precision_recall(tp, npos)
        per_class[name] = average_precision(precision, recall, use_07_metric=use_07_metric)
    defined = [ap for ap in per_class.values() if ap is not None]
    return {
        "map50": float(np.mean(defined)) if defined else None,
        "per_class": per_class,
        "num_ground_truth": counts,
        "metric": "voc07" if use_07_metric else "voc10",
        "iou": iou,
    }
