"""Deployment thresholds: precision, recall and F1 against the confidence threshold, and the F1-optimal
confidence per class.

AP ranks a detector over all thresholds; a deployed model needs one. Detections are matched to the
ground truth as in VOC evaluation (greedy, descending score, IoU > ``iou``, difficult and crowd boxes
ignored); at confidence ``c`` precision and recall count only the detections scoring >= ``c``.

The result (``threshold_curves``) is plain JSON: ``conf`` (C,) grid, ``overall`` and ``per_class``
curves, ``thresholds`` ({class name: F1-optimal confidence, or None without ground truth or matches})
and ``overall_threshold``. "Overall" pools the detections of all classes (micro average), which is
what one shared threshold gives.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from detect_ft.data.records import DatasetRecords
from detect_ft.evaluation.prediction_checks import check_predictions

GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # confidence steps of 0.01
THRESHOLD_PLOT_NAMES = ("f1_curve.png", "precision_curve.png", "recall_curve.png")


def curves_at(scores: np.ndarray, tp: np.ndarray, npos: int, grid: np.ndarray = GRID) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at each confidence of ``grid``.

    Args:
        scores: (D,) detection scores of one class (or pooled), any order.
        tp: (D,) 1 true positive, 0 false positive, -1 ignored (matched a difficult/crowd box).
        npos: countable ground-truth boxes.

    Returns:
        ``precision``, ``recall``, ``f1``, each (C,) float64; precision is 1 where nothing is kept
        (no false alarms), recall and F1 0 there.
    """
    counted = tp >= 0
    scores, hits = np.asarray(scores, np.float64)[counted], np.asarray(tp)[counted] == 1
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    # detections kept at confidence c: those with score >= c, a prefix of the descending order
    kept = len(scores) - np.searchsorted(scores[::-1], grid, side="left")
    tps = np.concatenate(([0], np.cumsum(hits)))[kept]
    precision = np.divide(tps, kept, out=np.ones(len(grid)), where=kept > 0)
    recall = tps / npos if npos > 0 else np.zeros(len(grid))
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(grid)), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1}


def best_threshold(f1: np.ndarray, grid: np.ndarray = GRID) -> Optional[float]:
    """The F1-optimal confidence: the middle of the widest-reaching run of grid points at the maximum F1.

    The middle rather than an end of the plateau keeps the threshold away from the one detection score
    that bounds it on this split. None when F1 is 0 everywhere (no true positive at any threshold).
    """
    top = float(f1.max()) if len(f1) else 0.0
    if top <= 0:
        return None
    at_top = np.flatnonzero(f1 >= top - 1e-9)
    start = end = int(at_top[0])
    while end + 1 < len(f1) and f1[end + 1] >= top - 1e-9:  # the first contiguous run at the maximum
        end += 1
    return float(grid[(start + end) // 2])


def threshold_curves(dataset: DatasetRecords, predictions: list[dict], *, iou: float = 0.5) -> dict:
    """P/R/F1 against confidence for the whole split and each class, and the F1-optimal thresholds.

    Args:
        dataset: the split; boxes xyxy absolute pixels, labels 1..K.
        predictions: one dict per record (``boxes`` (N, 4) xyxy pixels, ``scores``, ``labels`` 1..K),
            ideally kept down to a low score so the curves cover low confidences.
    """
    from detect_ft.evaluation.voc_eval import match_detections

    preds = check_predictions(dataset, predictions)
    labels, scores, tp, npos = match_detections(dataset, preds, iou=iou)
    overall = curves_at(scores, tp, int(npos[1:].sum()))
    per_class, thresholds = {}, {}
    for label, name in enumerate(dataset.class_names, start=1):
        mine = labels == label
        curves = curves_at(scores[mine], tp[mine], int(npos[label]))
        per_class[name] = {key: _rounded(value) for key, value in curves.items()}
        thresholds[name] = best_threshold(curves["f1"]) if npos[label] else None
    best = best_threshold(overall["f1"])
    return {
        "iou": iou,
        "conf": GRID.tolist(),
        "overall": {key: _rounded(value) for key, value in overall.items()},
        "overall_threshold": best,
        "overall_f1": float(overall["f1"].max()) if len(scores) else 0.0,
        "per_class": per_class,
        "thresholds": thresholds,
    }


def class_thresholds(curves: dict, class_names: list[str]) -> list[float]:
    """One confidence per class (in ``class_names`` order) for deployment: the class's F1-optimal
    threshold, or the overall one for classes without (no ground truth or no true positive there)."""
    fallback = curves.get("overall_threshold")
    fallback = 0.5 if fallback is None else fallback
    chosen = curves.get("thresholds") or {}
    return [float(chosen[name]) if chosen.get(name) is not None else float(fallback) for name in class_names]


def stored_thresholds(metrics, class_names: list[str]) -> Optional[list[float]]:
    """The per-class thresholds (:func:`class_thresholds`) of a metrics dict that has them (an evaluation's,
    or a checkpoint's last validation); None for metrics without (older files, runs without validation)."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("thresholds"), dict):
        return None
    return class_thresholds(metrics, class_names)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]
