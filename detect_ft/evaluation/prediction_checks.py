"""Sanity checks on predictions before they are scored: wrong shapes, unknown labels, wrong box format.

A metric computed on predictions in the wrong format is a plausible-looking wrong number, so every
evaluation route (COCO, VOC, plots) runs :func:`check_predictions` first and stops with a
:class:`DetectFTError` that says what to fix.
"""

from __future__ import annotations

import numpy as np

from detect_ft.data.records import DatasetRecords
from detect_ft.utils.errors import DetectFTError

# Boxes with x2 < x1 or y2 < y1 by more than this many pixels cannot come from an xyxy detector; the
# slack absorbs float noise of boxes that collapsed to a line.
_INVERTED_TOL = 1e-3


def check_predictions(dataset: DatasetRecords, predictions: list[dict], *, source: str = "predictions") -> list[dict]:
    """Validate per image predictions against ``dataset`` and return them as clean numpy arrays.

    Args:
        dataset: the split the predictions belong to, same order as ``dataset.records``.
        predictions: one dict per image with ``boxes`` (N, 4) float xyxy absolute pixels,
            ``scores`` (N,) float and ``labels`` (N,) int in 1..K.
        source: where the predictions come from (a file or model name), named in error messages.

    Returns:
        A list of dicts with ``boxes`` float64 (N, 4), ``scores`` float64 (N,), ``labels`` int64 (N,).

    Raises:
        DetectFTError: wrong count, missing keys, mismatched lengths, non-finite values, labels outside
            1..K, or inverted boxes (the usual sign of xywh boxes passed where xyxy is expected).
    """
    if len(predictions) != len(dataset.records):
        raise DetectFTError(
            f"{source}: {len(predictions)} prediction entries for {len(dataset.records)} images of "
            f"{dataset.source or 'the dataset'}; give exactly one dict per image, in the records' order"
        )
    clean = []
    inverted = total = 0
    first_inverted = ""
    for record, pred in zip(dataset.records, predictions):
        where = f"{source}, image {record.file_name} (id {record.image_id})"
        boxes, scores, labels = _checked_arrays(dataset, pred, where)
        flipped = (boxes[:, 2] < boxes[:, 0] - _INVERTED_TOL) | (boxes[:, 3] < boxes[:, 1] - _INVERTED_TOL)
        if flipped.any() and not first_inverted:
            first_inverted = f"image {record.file_name}: {boxes[np.argmax(flipped)].round(1).tolist()}"
        inverted += int(flipped.sum())
        total += len(boxes)
        clean.append({"boxes": boxes, "scores": scores, "labels": labels})
    if inverted:
        raise DetectFTError(
            f"{source}: {inverted} of {total} boxes have x2 < x1 or y2 < y1 (first: {first_inverted}); "
            "boxes must be xyxy absolute pixels [x1, y1, x2, y2]. If they are COCO-style [x, y, w, h], "
            "convert with x2 = x + w, y2 = y + h"
        )
    _check_not_normalised(dataset, clean, source)
    return clean


def _checked_arrays(dataset: DatasetRecords, pred: dict, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``boxes`` float64 (N, 4), ``scores`` float64 (N,) and ``labels`` int64 (N,) in 1..K;
    DetectFTError naming ``where`` for missing keys, wrong shapes, non-finite values or unknown labels."""
    missing = [key for key in ("boxes", "scores", "labels") if key not in pred]
    if missing:
        raise DetectFTError(f"{where}: prediction dict lacks {', '.join(missing)}; give boxes, scores and labels")
    boxes = np.asarray(pred["boxes"], dtype=np.float64)
    scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
    labels = np.asarray(pred["labels"]).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(scores) == len(labels):
        raise DetectFTError(
            f"{where}: boxes {boxes.shape}, scores {scores.shape}, labels {labels.shape}; "
            "expected boxes (N, 4) xyxy with N scores and N labels"
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise DetectFTError(f"{where}: boxes or scores hold NaN or inf; check the model output")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise DetectFTError(f"{where}: labels {labels[:5].tolist()} are not integers; give class indices 1..K")
    labels = labels.astype(np.int64)
    num_classes = dataset.num_classes
    bad = labels[(labels < 1) | (labels > num_classes)]
    if bad.size:
        raise DetectFTError(
            f"{where}: label {int(bad[0])} is not a class of this dataset, which has {num_classes} "
            f"classes (labels 1..{num_classes}: {', '.join(dataset.class_names[:5])}"
            f"{', ...' if num_classes > 5 else ''}); the model was trained with other classes, or its "
            "labels are 0-based: map them to the dataset's class order (label k = class_names[k-1])"
        )
    return boxes, scores, labels


def _check_not_normalised(dataset: DatasetRecords, preds: list[dict], source: str) -> None:
    # Many boxes all inside [0, 1.5] on images hundreds of pixels wide are relative coordinates;
    # scored as pixels they would all be tiny and the mAP silently ~0.
    coords = [p["boxes"] for p in preds if len(p["boxes"])]
    if not coords:
        return
    boxes = np.concatenate(coords)
    sizes = [min(r.width, r.height) for r in dataset.records]
    if len(boxes) >= 10 and boxes.max() <= 1.5 and float(np.median(sizes)) >= 64:
        raise DetectFTError(
            f"{source}: all {len(boxes)} boxes lie within [0, 1.5] on images of median side "
            f"{np.median(sizes):.0f} px; boxes must be absolute pixels, not normalised: multiply x by the "
            "image width and y by its height"
        )


def ground_truth_ignore(record) -> np.ndarray:
    """Boolean mask (N,) of a record's boxes that are neither positives nor negatives (crowd or difficult)."""
    return record.iscrowd | record.difficult


def predictions_ignore_image(predictions: list[dict], top_k: int = 10, tol: float = 1e-4) -> bool:
    """True when every image got the same top-``top_k`` scores: a model whose output does not depend on
    its input (a run that has not left its initial state, e.g. a learning rate still in warm-up).

    Args:
        predictions: per image dicts with ``scores`` (N,); at least two images must have detections.
    """
    tops = [np.sort(np.asarray(p["scores"], dtype=np.float64))[::-1][:top_k] for p in predictions]
    if len(tops) < 2 or any(len(t) == 0 for t in tops):
        return False
    k = min(len(t) for t in tops)
    stacked = np.stack([t[:k] for t in tops])
    return bool(np.abs(stacked - stacked[0]).max() <= tol)


# Boxes (in fractions of the image side) that move less than this from image to image sit "at the same
# places"; ground truth that moves at least COLLAPSE_MIN_TRUTH_SPREAD shows the objects do move.
COLLAPSE_MAX_SPREAD = 0.02
COLLAPSE_MIN_TRUTH_SPREAD = 0.05
COLLAPSE_MIN_IMAGES = 3


def boxes_ignore_image(predictions: list[dict], dataset, top_k: int = 3) -> bool:
    """True when every image's ``top_k`` boxes sit at the same places (as fractions of the image) although
    the ground-truth boxes move from image to image: a collapsed model, whatever its scores.

    Args:
        predictions: per image dicts with ``boxes`` (N, 4) xyxy pixels and ``scores`` (N,), in the order
            of ``dataset.records`` (each with ``width``, ``height`` and ``boxes``).
    """
    predicted, truth = [], []
    for pred, record in zip(predictions, dataset.records):
        scale = np.array([record.width, record.height] * 2, dtype=np.float64)
        boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
        if len(boxes):
            top = boxes[np.argsort(-np.asarray(pred["scores"]), kind="stable")[:top_k]] / scale
            predicted.append(top[np.lexsort(top.T[::-1])])  # an order that does not depend on the scores
        gt = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
        if len(gt):
            truth.append(gt[np.argmax((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))] / scale)
    if len(predicted) < COLLAPSE_MIN_IMAGES or len(truth) < COLLAPSE_MIN_IMAGES:
        return False
    k = min(len(p) for p in predicted)
    stacked = np.stack([p[:k] for p in predicted])
    return _spread(stacked) <= COLLAPSE_MAX_SPREAD and _spread(np.stack(truth)) >= COLLAPSE_MIN_TRUTH_SPREAD


def _spread(points: np.ndarray) -> float:
    """The median over images of the largest coordinate distance from the median image: (n, ...) -> float."""
    deviation = np.abs(points - np.median(points, axis=0)).reshape(len(points), -1).max(axis=1)
    return float(np.median(deviation))
