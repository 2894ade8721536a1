"""Export a detector, verify it against PyTorch, optionally quantise it: what ``detect-ft export`` runs.

The fp32 file is written to a temporary path beside ``output`` and renamed only after the graph has run
through onnxruntime and, when a validation split is given, passed the parity check; a failed check
leaves no file at ``output``. The INT8 file (``MODEL.int8.onnx``) is reported next to fp32 (mAP and
latency) but not gated: INT8 is expected to lose some accuracy, and how much is the user's call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch.nn as nn

from detect_ft.data.records import DatasetRecords
from detect_ft.edge.runtime import EdgeDetector
from detect_ft.errors import DetectFTError
from detect_ft.export.onnx_export import build_metadata, export_onnx, input_sizes
from detect_ft.export.parity import check_map_drop, compare_detections, score_runtime
from detect_ft.export.quantize import int8_path_for, quantize_int8
from detect_ft.io import atomic_path


def export_detector(
    model: nn.Module,
    output: str | os.PathLike,
    *,
    model_name: str,
    class_names: Sequence[str],
    category_ids: Optional[Sequence[int]] = None,
    opset: int = 17,
    val_dataset: Optional[DatasetRecords] = None,
    max_map_drop: float = 0.5,
    score_thresh: float = 0.001,
    backend: str = "hotcoco",
    int8: bool = False,
    calib_images: Optional[Sequence[np.ndarray]] = None,
    extra_metadata: Optional[dict[str, Any]] = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Export ``model`` to ``output`` (and ``MODEL.int8.onnx`` with ``int8``); verify when ``val_dataset``.

    Args:
        model: torchvision detector (labels 1..K, eval mode is set here).
        val_dataset: validation split labelled in the model's class order; None skips the parity check.
        max_map_drop: AP points the ONNX mAP may differ from PyTorch's before the export fails.
        score_thresh: detections below it are not scored (as ``eval.score_thresh``).
        calib_images: RGB uint8 training images for INT8 calibration (needed with ``int8``).

    Returns:
        A report: ``output``, ``model_name``, ``opset``, ``export_seconds``, ``verified``; with a
        validation split ``parity`` (``torch`` and ``onnx`` metrics with ``map``, ``map50`` and batch-1
        ``latency``; ``detections`` from :func:`compare_detections`; ``map_diff_points``); with ``int8``
        ``int8`` (path, calibration, and its metrics when verified).

    Raises:
        DetectFTError: the export fails, the graph does not run, or the mAPs differ too much.
    """
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise DetectFTError(f"ONNX output {output}: the file name must end in .onnx, e.g. {output.with_suffix('.onnx')}")
    if int8 and not calib_images:
        raise DetectFTError("INT8 export needs calibration images; pass some from the training split (data.train)")
    model = model.eval().cpu()
    meta = build_metadata(model, model_name=model_name, class_names=class_names, category_ids=category_ids,
                          opset=opset, extra=extra_metadata)  # fmt: skip
    side = input_sizes(model)["min_size"]
    report: dict[str, Any] = {"output": str(output), "model_name": model_name, "opset": opset,
                              "verified": val_dataset is not None}  # fmt: skip
    start = time.perf_counter()
    with atomic_path(output) as tmp:
        export_onnx(model, tmp, metadata=meta, opset=opset, sample_size=(side, side * 4 // 3))
        report["export_seconds"] = time.perf_counter() - start
        _smoke_run(tmp, calib_images)
        if val_dataset is not None:
            report["parity"] = verify_export(model, tmp, val_dataset, max_map_drop=max_map_drop,
                                             score_thresh=score_thresh, backend=backend, progress=progress)  # fmt: skip
    if int8:
        int8_path = int8_path_for(output)
        with atomic_path(int8_path) as tmp:
            calibration = quantize_int8(output, tmp, list(calib_images))
            _smoke_run(tmp, calib_images)
        report["int8"] = {"output": str(int8_path), **calibration}
        if val_dataset is not None:
            _, metrics = score_runtime(EdgeDetector(int8_path).predict_batch, val_dataset, score_thresh=score_thresh,
                                       backend=backend, source=str(int8_path), progress=progress)  # fmt: skip
            fp32_map = report["parity"]["onnx"]["map"]
            report["int8"].update(_summary(metrics), map_diff_points=100 * ((metrics["map"] or 0) - (fp32_map or 0)))
    return report


def verify_export(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    dataset: DatasetRecords,
    *,
    max_map_drop: float = 0.5,
    score_thresh: float = 0.001,
    backend: str = "hotcoco",
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``dataset`` through PyTorch (CPU) and onnxruntime, compare detections, gate on the mAP difference.

    Returns:
        ``torch``, ``onnx`` (map, map50, latency), ``detections`` (:func:`compare_detections`) and
        ``map_diff_points`` (ONNX minus PyTorch).
    """
    from detect_ft.evaluation.evaluator import torch_predictor

    torch_preds, torch_metrics = score_runtime(torch_predictor(model, "cpu"), dataset, score_thresh=score_thresh,
                                               backend=backend, source="PyTorch model", progress=progress)  # fmt: skip
    onnx_preds, onnx_metrics = score_runtime(EdgeDetector(onnx_path).predict_batch, dataset,
                                             score_thresh=score_thresh, backend=backend, source="ONNX model",
                                             progress=progress)  # fmt: skip
    detections = compare_detections(torch_preds, onnx_preds)
    check_map_drop(torch_metrics["map"], onnx_metrics["map"], max_map_drop, "exported ONNX model")
    return {
        "torch": _summary(torch_metrics),
        "onnx": _summary(onnx_metrics),
        "detections": detections,
        "map_diff_points": 100 * ((onnx_metrics["map"] or 0) - (torch_metrics["map"] or 0)),
        "images": len(dataset),
    }


def _summary(metrics: dict) -> dict[str, Any]:
    return {"map": metrics["map"], "map50": metrics["map50"], "latency": metrics["latency"]}


def _smoke_run(path: str | os.PathLike, images: Optional[Sequence[np.ndarray]]) -> None:
    """Run the graph once in onnxruntime, so a file that loads but cannot execute is never kept."""
    image = images[0] if images else np.full((96, 128, 3), 127, np.uint8)
    try:
        EdgeDetector(path).predict(image)
    except DetectFTError:
        raise
    except Exception as exc:
        raise DetectFTError(f"the exported graph does not run in onnxruntime ({str(exc).splitlines()[0]}); "
                            "try another opset (export.opset)") from exc  # fmt: skip
