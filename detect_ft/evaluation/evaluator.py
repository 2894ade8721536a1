"""Run a detector over a split's records and score it.

One loop, :func:`predict_records`, serves every runtime: it decodes images and hands batches to a
``predict_batch(images) -> predictions`` callable. :func:`torch_predictor` makes that callable for a
torchvision detector; the ONNX edge runtime provides its own with the same signature. The detections
format, ``PredictBatch`` and the score filter are :mod:`detect_ft.inference.predictions`'s (re-exported here).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from detect_ft.data.image import read_image
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.prediction_checks import boxes_ignore_image, predictions_ignore_image
from detect_ft.inference.predictions import PredictBatch, as_detections, filter_predictions
from detect_ft.utils.errors import DataError, DetectFTError

__all__ = [
    "PredictBatch",
    "evaluate_model",
    "filter_predictions",
    "predict_records",
    "score_predictions",
    "torch_predictor",
]


def predict_records(
    predict_batch: PredictBatch,
    dataset: DatasetRecords,
    *,
    batch_size: int = 8,
    workers: int = 0,
    progress: bool = True,
    desc: str = "predict",
) -> list[dict]:
    """Predictions for every record, in the records' order.

    Args:
        predict_batch: maps a list of RGB uint8 images (H, W, 3) to one dict per image with ``boxes``
            (N, 4) float xyxy in that image's pixels, ``scores`` (N,) and ``labels`` (N,) in 1..K.
        dataset: the split; images are read from ``record.image_path``.
        batch_size: images per ``predict_batch`` call.
        workers: decoding threads (0: decode in this thread). OpenCV releases the GIL while decoding,
            so threads overlap decoding with inference without a process pool.
        progress: show a tqdm bar, labelled ``desc``.

    Returns:
        One dict per record with numpy ``boxes`` float32 (N, 4), ``scores`` float32 (N,), ``labels``
        int64 (N,).
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise DetectFTError(f"batch_size must be >= 1, got {batch_size}; set eval.batch_size to a positive integer")
    batches = [dataset.records[i : i + batch_size] for i in range(0, len(dataset.records), batch_size)]
    predictions: list[dict] = []
    with tqdm(total=len(dataset.records), unit="img", desc=desc, disable=not progress, leave=False) as bar:
        for records, images in _decoded_batches(batches, workers):
            outputs = list(predict_batch(images))
            if len(outputs) != len(images):
                raise DetectFTError(
                    f"the predictor returned {len(outputs)} results for a batch of {len(images)} images; "
                    "predict_batch must return one dict per image"
                )
            predictions.extend(as_detections(out) for out in outputs)
            bar.update(len(records))
    return predictions


def _decoded_batches(batches: list[list[ImageRecord]], workers: int) -> Iterator[tuple[list, list[np.ndarray]]]:
    if workers <= 0:
        for records in batches:
            yield records, [_read(r) for r in records]
        return
    # Decode at most two batches ahead, so memory stays bounded on large splits.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        upcoming = iter(batches)
        for records in upcoming:
            pending.append((records, [pool.submit(_read, r) for r in records]))
            if len(pending) > 2:
                break
        while pending:
            records, futures = pending.popleft()
            yield records, [f.result() for f in futures]
            nxt = next(upcoming, None)
            if nxt is not None:
                pending.append((nxt, [pool.submit(_read, r) for r in nxt]))


def _read(record: ImageRecord) -> np.ndarray:
    try:
        image = read_image(record.image_path, apply_orientation=record.apply_orientation)
    except DataError as exc:
        raise DataError(
            f"{exc} (found while predicting; check the split with `detect-ft check-data`, and "
            "data.on_unreadable_image=drop leaves such images out)"
        ) from None
    height, width = image.shape[:2]
    if (width, height) != (record.width, record.height):
        # Boxes are in the annotated size; scoring predictions made on another size would be wrong.
        raise DataError(
            f"image file {record.image_path} decodes to {width}x{height} but is annotated as "
            f"{record.width}x{record.height}; fix the annotation, or leave such images out with "
            "data.on_size_mismatch=drop (`detect-ft check-data` lists them)"
        )
    return image


def torch_predictor(model, device, *, whole_batches: bool = False) -> PredictBatch:
    """``predict_batch`` for a torchvision-style detector.

    The model is put in eval mode and on ``device``. Images go in as float (3, H, W) tensors in [0, 1]
    (torchvision detectors resize and normalise inside their ``transform``, and return boxes in the
    input image's pixels); outputs come back as numpy arrays on the CPU. On a GPU the images of a call
    go through the model in one forward; on the CPU one by one, as batched forwards ran slower per image
    there (640x480 frames, 2 cores, ms per image at 1 / 8 per forward: SSDLite-Lite0 28.8 / 53.1,
    Faster R-CNN MobileNetV3-320 84.1 / 108.3): a batch's activations outgrow the CPU's caches.
    ``whole_batches=True`` runs a call's images in one forward on the CPU too (BatchNorm recalibration:
    a layer in training mode takes the statistics of the forward's batch).
    """
    import torch

    device = torch.device(device)
    model.eval().to(device)
    per_forward = 1 if device.type == "cpu" and not whole_batches else None

    def predict_batch(images: list[np.ndarray]) -> list[dict]:
        # uint8 crosses to the device (4x fewer bytes than float), the scaling happens there.
        tensors = [
            torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1).float().div_(255) for img in images
        ]
        step = per_forward or max(len(tensors), 1)
        with torch.inference_mode():
            outputs = [out for i in range(0, len(tensors), step) for out in model(tensors[i : i + step])]
        return [
            {
                key: out[key].detach().float().cpu().numpy() if key != "labels" else out[key].cpu().numpy()
                for key in ("boxes", "scores", "labels")
            }
            for out in outputs
        ]

    return predict_batch


def score_predictions(
    dataset: DatasetRecords, predictions: list[dict], *, backend: str = "hotcoco", source: str = "predictions"
) -> dict:
    """:func:`coco_metrics` plus the VOC view: ``voc_map50`` (all-point AP at IoU 0.5, mean over
    classes), ``voc_per_class`` and ``num_ground_truth_per_class`` (countable boxes per class); and the
    deployment thresholds (:func:`~detect_ft.evaluation.thresholds.threshold_curves`): ``thresholds``
    ({class: F1-optimal confidence or None}), ``overall_threshold``, ``overall_f1`` and the full
    ``threshold_curves``."""
    from detect_ft.evaluation.coco_eval import coco_metrics
    from detect_ft.evaluation.thresholds import threshold_curves
    from detect_ft.evaluation.voc_eval import voc_metrics

    metrics = coco_metrics(dataset, predictions, backend=backend, source=source)
    voc = voc_metrics(dataset, predictions, source=source)
    curves = threshold_curves(dataset, predictions)
    metrics.update(
        voc_map50=voc["map50"],
        voc_per_class=voc["per_class"],
        num_ground_truth_per_class=voc["num_ground_truth"],
        thresholds=curves["thresholds"],
        overall_threshold=curves["overall_threshold"],
        overall_f1=curves["overall_f1"],
        threshold_curves=curves,
    )
    return metrics


def evaluate_model(
    model,
    dataset: DatasetRecords,
    *,
    device="cpu",
    batch_size: int = 8,
    workers: int = 0,
    score_thresh: float = 0.001,
    backend: str = "hotcoco",
    progress: bool = False,
    desc: str = "predict",
    slicing=None,
) -> dict:
    """Validation metrics of a torch detector on a split (the trainer's per-epoch evaluation).

    ``slicing``: a :class:`~detect_ft.inference.slicing.SliceOptions` to validate with sliced inference (what the
    ``eval.slice*`` keys ask for), or None for whole images.

    Returns:
        :func:`score_predictions`'s dict plus ``seconds`` (prediction + scoring wall time), ``images_per_s``
        (prediction only) and ``constant_predictions`` (a collapsed model: :func:`predictions_ignore_image`
        or :func:`boxes_ignore_image`).
        The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    start = time.perf_counter()
    predict_batch = torch_predictor(model, device)
    try:
        raw = predict_records(
            slicing.wrap(predict_batch) if slicing is not None else predict_batch,
            dataset,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            desc=desc,
        )
    finally:
        model.train(was_training)
    predict_s = time.perf_counter() - start
    metrics = score_predictions(
        dataset, filter_predictions(raw, score_thresh), backend=backend, source="model predictions"
    )
    del metrics["threshold_curves"]  # the per-class thresholds stay; checkpoints carry these metrics
    metrics["seconds"] = time.perf_counter() - start
    metrics["images_per_s"] = len(dataset.records) / predict_s if predict_s > 0 else None
    metrics["constant_predictions"] = predictions_ignore_image(raw) or boxes_ignore_image(raw, dataset)
    if slicing is not None:
        metrics["slicing"] = slicing.describe()
    return metrics
