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
from detect_ft.evaluation.prediction_checks import check_predictions, ground_truth_ignore
from detect_ft.utils.boxes import box_iou


def match_detections(
    dataset: DatasetRecords, predictions: list[dict], *, iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy VOC matching of every detection of the split, all classes at once.

    A detection's candidate is its best-overlapping ground-truth box of the same class; detections
    claim candidates in descending score order. That order only matters among detections of one image
    and class, so each image is matched on its own and the results are merged by a stable sort, which
    equals the devkit's split-wide per-class ranking, ties included.

    Args:
        predictions: checked predictions (see :func:`check_predictions`), same order as the records.

    Returns:
        ``labels`` (D,), ``scores`` (D,) in descending score order (stable), ``tp`` (D,) int8 with
        1 = true positive, 0 = false positive, -1 = ignored (best match is a difficult/crowd box), and
        ``npos`` (K+1,): countable ground-truth boxes per label (index 0 unused).
    """
    npos = np.zeros(dataset.num_classes + 1, np.int64)
    all_labels, all_scores, all_tp = [], [], []
    for record, pred in zip(dataset.records, predictions):
        ignore = ground_truth_ignore(record)
        npos += np.bincount(record.labels[~ignore], minlength=len(npos))
        tp = np.zeros(len(pred["scores"]), np.int8)
        if record.num_boxes and len(tp):
            overlaps = box_iou(pred["boxes"], record.boxes.astype(np.float64))
            overlaps[pred["labels"][:, None] != record.labels[None, :]] = -1.0
            best = overlaps.argmax(1)
            best_iou = overlaps[np.arange(len(tp)), best]
            taken = np.zeros(record.num_boxes, bool)
            order = np.argsort(-pred["scores"], kind="stable")
            for d in order[best_iou[order] > iou].tolist():  # only these can be anything but a FP
                g = best[d]
                if ignore[g]:
                    tp[d] = -1
                elif not taken[g]:
                    taken[g] = True
                    tp[d] = 1
        all_labels.append(pred["labels"])
        all_scores.append(pred["scores"])
        all_tp.append(tp)
    labels, scores, tp = np.concatenate(all_labels), np.concatenate(all_scores), np.concatenate(all_tp)
    order = np.argsort(-scores, kind="stable")
    return labels[order], scores[order], tp[order], npos


def precision_recall(tp: np.ndarray, npos: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall (D',) over the non-ignored detections of one class, ``tp`` as
    :func:`match_detections` marks them (in descending score order)."""
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
    labels, _, tp, npos = match_detections(dataset, preds, iou=iou)
    per_class: dict[str, Optional[float]] = {}
    counts: dict[str, int] = {}
    for label, name in enumerate(dataset.class_names, start=1):
        counts[name] = int(npos[label])
        if npos[label] == 0:
            per_class[name] = None  # AP is undefined, not 0: no detector could score here
            continue
        precision, recall = precision_recall(tp[labels == label], int(npos[label]))
        per_class[name] = average_precision(precision, recall, use_07_metric=use_07_metric)
    defined = [ap for ap in per_class.values() if ap is not None]
    return {
        "map50": float(np.mean(defined)) if defined else None,
        "per_class": per_class,
        "num_ground_truth": counts,
        "metric": "voc07" if use_07_metric else "voc10",
        "iou": iou,
    }
