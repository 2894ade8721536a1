"""Precise BatchNorm statistics before each validation (as detectron2's PreciseBN hook does).

    subset = calibration_records(train_records)            # a fixed, evenly spread subset of the split
    recalibrate_batchnorm(model, subset, device=device, batch_size=16)

A BatchNorm layer's running statistics are a slow moving average (SSDLite's new layers: momentum 0.03)
of batches seen while the weights kept changing. In a short fine-tuning run they lag far behind the
weights, and in the small maps of SSDLite's extra blocks and heads the lag compounds from layer to
layer: in eval mode those levels gave every image the same features, so the model drew the same boxes
on every photo (a collapsed model; raccoon, 5 minutes of training: mAP50 0.60 with the running
statistics, 0.85 with recomputed ones, docs/benchmarks.md). Recomputing them with the current weights
on a few hundred training images, un-augmented, costs a few seconds of forward passes and changes no
weight; the checkpoints then hold statistics that match their weights.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch.nn as nn

from detect_ft.data.records import DatasetRecords

CALIBRATION_IMAGES = 64


def calibration_records(records: DatasetRecords, count: int = CALIBRATION_IMAGES) -> DatasetRecords:
    """``count`` records spread evenly over the split (all of them for a smaller split), always the same."""
    step = max(len(records.records) // count, 1)
    chosen = records.records[::step][:count]
    return DatasetRecords(
        records=chosen,
        class_names=list(records.class_names),
        category_ids=list(records.category_ids),
        source=records.source,
    )


def recalibrate_batchnorm(
    model: nn.Module, records: DatasetRecords, *, device, batch_size: int = 8, workers: int = 0
) -> int:
    """Replace the running mean and variance of every BatchNorm layer of ``model`` by their average over
    ``records``' images (the model's own resizing and normalisation, no augmentation); the number of
    layers recalibrated (0 for a model without BatchNorm: nothing runs).

    FrozenBatchNorm (frozen pretrained backbones) is not a BatchNorm layer here, and SyncBatchNorm is left
    as it is (recalibrating it on one rank would wait for the others). The model is left in eval mode.
    """
    from detect_ft.evaluation.evaluator import predict_records, torch_predictor

    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and not isinstance(m, nn.SyncBatchNorm)
        and m.track_running_stats
    ]
    if not norms or not records.records:
        return 0
    # eval mode everywhere but in the layers below, whose statistics come from each forward's batch
    predict_batch = torch_predictor(model, device, whole_batches=True)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    try:
        predict_records(predict_batch, records, batch_size=batch_size, workers=workers, progress=False)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return len(norms)


def evaluate_recalibrated(
    model: nn.Module,
    *,
    evaluate: Callable[[nn.Module], dict[str, Any]],
    calibration: DatasetRecords,
    device,
    batch_size: int,
    workers: int,
) -> dict[str, Any]:
    """``evaluate(model)`` after :func:`recalibrate_batchnorm` on ``calibration``; ``seconds`` covers both
    and ``recalibrated_bn`` counts the layers recalibrated."""
    started = time.perf_counter()
    layers = recalibrate_batchnorm(model, calibration, device=device, batch_size=batch_size, workers=workers)
    metrics = evaluate(model)
    metrics.update(seconds=time.perf_counter() - started, recalibrated_bn=layers)
    return metrics
