"""COCO-style box mAP on records, through pycocotools or a faster drop-in backend.

Ground truth is built in memory straight from the records (no image decoding, no JSON round trip):
bbox = xywh, area = w * h, iscrowd from the records, category_id = the dataset's original id. The
``difficult`` flag is a VOC notion and plays no part here (see :mod:`voc_eval`). Every backend runs the
pycocotools protocol (10 IoU thresholds, 101 recall points, maxDets 1/10/100 per image and category,
small/medium/large at 32² and 96² px²); pycocotools is the reference the others are tested against.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from detect_ft.data.records import DatasetRecords
from detect_ft.evaluation.prediction_checks import check_predictions
from detect_ft.inference.predictions import coco_results, filter_detections
from detect_ft.utils.atomic_io import write_json_atomic
from detect_ft.utils.errors import ConfigError, DataError

STAT_KEYS = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def coco_ground_truth(dataset: DatasetRecords) -> dict:
    """The split as a COCO dataset dict: images (id, width, height), annotations (bbox xywh, area w*h,
    iscrowd, original category ids, ids 1..N) and categories (id, name)."""
    seen: set[int] = set()
    images, annotations = [], []
    for record in dataset.records:
        if record.image_id in seen:
            raise DataError(
                f"{dataset.source or 'dataset'}: image id {record.image_id} is used twice "
                f"(second: {record.file_name}); image ids must be unique within a split"
            )
        seen.add(record.image_id)
        images.append(
            {
                "id": int(record.image_id),
                "width": int(record.width),
                "height": int(record.height),
                "file_name": record.file_name,
            }
        )
        boxes = record.boxes.astype(np.float64)
        wh = boxes[:, 2:] - boxes[:, :2]
        for box, size, label, crowd in zip(
            boxes.tolist(), wh.tolist(), record.labels.tolist(), record.iscrowd.tolist()
        ):
            annotations.append(
                {
                    "id": len(annotations) + 1,  # pycocotools treats id 0 as "unmatched"
                    "image_id": int(record.image_id),
                    "category_id": int(dataset.category_ids[label - 1]),
                    "bbox": [box[0], box[1], size[0], size[1]],
                    "area": size[0] * size[1],
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": int(c), "name": n} for c, n in zip(dataset.category_ids, dataset.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_array(
    dataset: DatasetRecords, predictions: list[dict], *, score_thresh: float = 0.0, checked: bool = False
) -> np.ndarray:
    """Detections as the (N, 7) float64 array pycocotools' ``loadNumpyAnnotations`` reads:
    ``[image_id, x, y, w, h, score, category_id]`` (xywh absolute pixels, original category ids)."""
    preds = predictions if checked else check_predictions(dataset, predictions)
    cat_ids = np.asarray(dataset.category_ids, dtype=np.float64)
    parts = []
    for record, pred in zip(dataset.records, preds):
        kept = filter_detections(pred, score_thresh)
        boxes = kept["boxes"]
        n = len(boxes)
        if not n:
            continue
        part = np.empty((n, 7), np.float64)
        part[:, 0] = record.image_id
        part[:, 1:3] = boxes[:, :2]
        part[:, 3:5] = boxes[:, 2:] - boxes[:, :2]
        part[:, 5] = kept["scores"]
        part[:, 6] = cat_ids[kept["labels"] - 1]
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros((0, 7), np.float64)


def predictions_to_coco_results(
    dataset: DatasetRecords, predictions: list[dict], *, score_thresh: float = 0.0
) -> list[dict]:
    """Detections in COCO results format: ``{"image_id", "category_id" (original id), "bbox" [x, y, w, h]
    absolute pixels, "score"}``, one dict per box (rows of :func:`detect_ft.inference.predictions.coco_results`), in
    the records' order."""
    preds = check_predictions(dataset, predictions)
    rows: list[dict] = []
    for record, pred in zip(dataset.records, preds):
        rows += coco_results(record.image_id, filter_detections(pred, score_thresh), dataset.category_ids)
    return rows


def write_coco_results(
    path: str | Path, dataset: DatasetRecords, predictions: list[dict], *, score_thresh: float = 0.0
) -> None:
    """Write :func:`predictions_to_coco_results` as JSON, atomically."""
    write_json_atomic(path, predictions_to_coco_results(dataset, predictions, score_thresh=score_thresh), indent=None)


def _results_from_array(dets: np.ndarray) -> list[dict]:
    # The backends' loadRes input, from the (N, 7) array the scoring already built (detections_array).
    rows = dets.tolist()
    return [{"image_id": int(r[0]), "category_id": int(r[6]), "bbox": r[1:5], "score": r[5]} for r in rows]


def _pycocotools(gt: dict, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress unconditionally
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = _empty_results(COCO, gt) if not len(dets) else coco_gt.loadRes(_results_from_array(dets))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], np.float64), np.asarray(evaluator.eval["precision"])


def _faster_coco_eval(gt: dict, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise _missing("faster_coco_eval", "faster-coco-eval") from None
    quiet = dict(print_function=lambda *args, **kwargs: None)
    coco_gt = COCO(gt, **quiet)
    coco_dt = _empty_results(COCO, gt) if not len(dets) else coco_gt.loadRes(_results_from_array(dets))
    coco_dt.print_function = quiet["print_function"]
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", **quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return np.asarray(evaluator.stats[:12], np.float64), np.asarray(evaluator.eval["precision"])


def _hotcoco(gt: dict, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        import hotcoco
    except ImportError:
        raise _missing("hotcoco", "hotcoco") from None
    coco_gt = hotcoco.COCO(gt)
    # The Rust loader reads the (N, 7) array directly: no per-detection Python dicts.
    coco_dt = coco_gt.load_res(dets if len(dets) else [])
    evaluator = hotcoco.COCOeval(coco_gt, coco_dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], np.float64), np.asarray(evaluator.eval["precision"])


def _missing(module: str, package: str) -> ConfigError:
    return ConfigError(
        f"config key 'eval.backend': {module} is not installed; pip install {package} or set eval.backend=pycocotools"
    )


def _empty_results(coco_cls: type, gt: dict):
    # pycocotools' loadRes indexes anns[0], so "no detections at all" needs a hand-built result set.
    coco_dt = coco_cls()
    coco_dt.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]), "annotations": []}
    coco_dt.createIndex()
    return coco_dt


# hotcoco first: the default, ~10x faster than faster_coco_eval on tools/bench_eval.py, stats identical.
BACKENDS: dict[str, Callable[[dict, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "hotcoco": _hotcoco,
    "faster_coco_eval": _faster_coco_eval,
    "pycocotools": _pycocotools,
}


def run_backend(gt: dict, dets: np.ndarray, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """Run one backend on a COCO ground-truth dict and an (N, 7) detections array.

    Returns:
        ``stats`` (12,) float64 in pycocotools' summarize order (``STAT_KEYS``; -1 where undefined) and
        ``precision`` (T=10, R=101, K, A=4, M=3) float64, K ordered by ascending category id.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"config key 'eval.backend': got {backend!r}; allowed: {', '.join(BACKENDS)}")
    return BACKENDS[backend](gt, dets)


def coco_metrics(
    dataset: DatasetRecords,
    predictions: list[dict],
    *,
    backend: str = "hotcoco",
    score_thresh: float = 0.0,
    source: str = "predictions",
) -> dict:
    """COCO-style box metrics of ``predictions`` on ``dataset``.

    Args:
        dataset: the split; boxes xyxy absolute pixels, labels 1..K.
        predictions: one dict per record (same order): ``boxes`` (N, 4) xyxy absolute pixels,
            ``scores`` (N,), ``labels`` (N,) in 1..K.
        backend: ``hotcoco`` (default), ``faster_coco_eval`` or ``pycocotools`` (identical protocol).
        score_thresh: detections scoring below this are dropped before scoring.
        source: named in error messages about malformed predictions.

    Returns:
        ``map`` (AP@[.50:.95]), ``map50``, ``map75``, ``map_small/medium/large``, ``mar_1/10/100``,
        ``mar_small/medium/large`` as floats in [0, 1], or None where no ground truth defines them;
        ``per_class`` and ``per_class_map50`` ({class name: AP or None}); ``num_images``,
        ``num_detections`` (after the score threshold), ``num_ground_truth`` and ``backend``.
    """
    preds = check_predictions(dataset, predictions, source=source)
    gt = coco_ground_truth(dataset)
    dets = detections_array(dataset, preds, score_thresh=score_thresh, checked=True)
    stats, precision = run_backend(gt, dets, backend)
    metrics: dict = {key: _defined(value) for key, value in zip(STAT_KEYS, stats.tolist())}
    order = np.argsort(dataset.category_ids, kind="stable")  # precision's K axis is sorted by id
    per_class, per_class50 = {}, {}
    for k, idx in enumerate(order):
        name = dataset.class_names[idx]
        per_class[name] = _mean_defined(precision[:, :, k, 0, -1])
        per_class50[name] = _mean_defined(precision[0, :, k, 0, -1])
    metrics.update(
        per_class={n: per_class[n] for n in dataset.class_names},
        per_class_map50={n: per_class50[n] for n in dataset.class_names},
        num_images=len(dataset.records),
        num_detections=int(len(dets)),
        num_ground_truth=int(sum(1 for a in gt["annotations"] if not a["iscrowd"])),
        backend=backend,
    )
    return metrics


def _defined(value: float) -> Optional[float]:
    # pycocotools writes -1 where a bucket has no ground truth; 0 would read as "detector failed".
    return None if value < 0 else float(value)


def _mean_defined(values: np.ndarray) -> Optional[float]:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None
