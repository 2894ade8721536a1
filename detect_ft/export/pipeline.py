"""Export a detector, verify it against PyTorch, optionally quantise it: what ``detect-ft export`` runs.

The fp32 file is written to a temporary path beside ``output`` and renamed only after the graph has run
through onnxruntime and, when a validation split is given, passed the parity check; a failed check
leaves no file at ``output``. The INT8 file (``MODEL.int8.onnx``) is gated the same way against the
fp32 ONNX model: when its mAP is more than ``int8_max_map_drop`` AP points lower, it is refused
(:class:`Int8RefusedError`, no INT8 file; the verified fp32 file stays) unless ``int8_keep_anyway``,
which keeps it and flags the report. Its speed against fp32 is measured once and reported once, so the
report can say when INT8 is slower: with a validation split, from the two validation passes (the
latencies the report's table shows); without one, by alternating calls on a calibration image. Without a
validation split INT8 is not gated, and the report says so.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch.nn as nn

from detect_ft.data.records import DatasetRecords
from detect_ft.export.onnx_export import build_metadata, check_batch, export_onnx, input_sizes
from detect_ft.export.parity import check_map_drop, compare_detections, score_runtime
from detect_ft.export.quantize import Int8Options, int8_path_for, quantize_int8
from detect_ft.inference.runtime import EdgeDetector
from detect_ft.utils.atomic_io import atomic_path
from detect_ft.utils.errors import DetectFTError


class Int8RefusedError(DetectFTError):
    """The INT8 model lost more mAP than allowed; ``report`` is the export report up to that point (fp32
    written and verified, ``int8`` with the refused model's metrics and ``gate: "refused"``)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


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
    int8_options: Optional[Int8Options] = None,
    int8_max_map_drop: float = 1.0,
    int8_keep_anyway: bool = False,
    extra_metadata: Optional[dict[str, Any]] = None,
    progress: bool = False,
    batch: int = 1,
    reference: Optional[TorchReference] = None,
) -> dict[str, Any]:
    """Export ``model`` to ``output`` (and ``MODEL.int8.onnx`` with ``int8``); verify when ``val_dataset``.

    Args:
        model: torchvision detector (labels 1..K, eval mode is set here).
        val_dataset: validation split labelled in the model's class order; None skips the parity check.
        max_map_drop: AP points the ONNX mAP may differ from PyTorch's before the export fails.
        score_thresh: detections below it are not scored (as ``eval.score_thresh``).
        calib_images: RGB uint8 training images for INT8 calibration (needed with ``int8``).
        int8_options: how to quantise (default :class:`Int8Options` ``()``).
        int8_max_map_drop: AP points the INT8 mAP may be below the fp32 ONNX mAP before INT8 is refused.
        int8_keep_anyway: keep a refused INT8 model (the report's ``int8.gate`` says ``kept anyway``).
        batch: images per graph run, fixed in the graph (see :mod:`detect_ft.export.onnx_export`); INT8
            is exported at batch 1 only.
        reference: PyTorch's run on ``val_dataset`` when the caller has it (:func:`torch_reference`).

    Returns:
        A report: ``output``, ``model_name``, ``opset``, ``batch``, ``export_seconds``, ``verified``; with a
        validation split ``parity`` (:func:`verify_export`'s report); with ``int8`` ``int8`` (see
        :func:`_export_int8`).

    Raises:
        DetectFTError: the export fails, the graph does not run, or the mAPs differ too much.
        Int8RefusedError: the INT8 model lost more than ``int8_max_map_drop`` (and not ``int8_keep_anyway``).
    """
    output = _checked_output(output, int8, calib_images, batch)
    model = model.eval().cpu()
    names = {"model_name": model_name, "class_names": class_names, "category_ids": category_ids}
    meta = build_metadata(model, **names, opset=opset, batch=batch, extra=extra_metadata)
    report = {"output": str(output), "model_name": model_name, "opset": opset, "batch": batch}
    report["verified"] = val_dataset is not None
    report.update(_threshold_report(meta, class_names))
    checks = {"max_map_drop": max_map_drop, "score_thresh": score_thresh, "backend": backend, "progress": progress}
    checks["reference"] = reference
    report.update(_write_fp32(model, output, meta, calib_images, val_dataset, checks))
    if int8:
        gate = Int8Gate(val_dataset, int8_max_map_drop, int8_keep_anyway, score_thresh, backend, progress)
        _export_int8(output, report, list(calib_images), int8_options, gate)
    return report


def _threshold_report(meta: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """``thresholds`` (class name -> score threshold) and ``pooled_thresholds`` when the metadata carries
    per-class thresholds, else nothing. They go in the report before anything is written, so that a
    refused INT8 model's report says them too."""
    if not meta.get("thresholds"):
        return {}
    return {
        "thresholds": dict(zip(class_names, meta["thresholds"])),
        "pooled_thresholds": meta.get("pooled_thresholds", []),
    }


def _write_fp32(
    model: nn.Module,
    output: Path,
    meta: dict[str, Any],
    calib_images: Optional[Sequence[np.ndarray]],
    val_dataset: Optional[DatasetRecords],
    checks: dict[str, Any],
) -> dict[str, Any]:
    """Export ``model`` to ``output`` through a temporary file that is renamed only once the graph has run in
    onnxruntime and, with ``val_dataset``, passed :func:`verify_export` (``checks`` are its options).

    Returns:
        ``export_seconds`` and, with ``val_dataset``, ``parity``.
    """
    side = input_sizes(model)["min_size"]
    with atomic_path(output) as tmp:
        start = time.perf_counter()
        sample = (side, side * 4 // 3)
        export_onnx(model, tmp, metadata=meta, opset=meta["opset"], sample_size=sample, batch=meta["input"]["batch"])
        written: dict[str, Any] = {"export_seconds": time.perf_counter() - start}
        smoke_run(tmp, calib_images)
        if val_dataset is not None:
            written["parity"] = verify_export(model, tmp, val_dataset, **checks)
    return written


def _checked_output(
    output: str | os.PathLike, int8: bool, calib_images: Optional[Sequence[np.ndarray]], batch: int = 1
) -> Path:
    """``output`` as a Path; DetectFTError when it is not a .onnx name, INT8 lacks calibration images, or
    the batch is not 1..64 or not 1 with INT8."""
    if int8 and check_batch(batch) > 1:
        raise DetectFTError(
            f"INT8 export is at batch 1 only (asked for batch {batch}); export INT8 at batch 1, or leave out INT8"
        )
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise DetectFTError(
            f"ONNX output {output}: the file name must end in .onnx, e.g. {output.with_suffix('.onnx')}"
        )
    if int8 and not calib_images:
        raise DetectFTError("INT8 export needs calibration images; pass some from the training split (data.train)")
    return output


@dataclasses.dataclass(frozen=True)
class Int8Gate:
    """How the INT8 model is checked against the fp32 ONNX model (the ``int8_*`` arguments of
    :func:`export_detector`); without ``val_dataset`` it is not checked."""

    val_dataset: Optional[DatasetRecords]
    max_map_drop: float = 1.0
    keep_anyway: bool = False
    score_thresh: float = 0.001
    backend: str = "hotcoco"
    progress: bool = False

    def judge(
        self, info: dict[str, Any], metrics: dict, baseline_map: float, baseline_latency: dict
    ) -> Optional[float]:
        """Record the INT8 model's validation ``metrics`` in ``info`` (``map``, ``map50``, ``latency``,
        ``map_diff_points`` against ``baseline_map``, ``speed`` against ``baseline_latency``) and its ``gate``;
        the AP points it lost when it is refused (the caller raises with its own message), else None."""
        info.update(_summary(metrics), map_diff_points=100 * ((metrics["map"] or 0.0) - baseline_map))
        info["speed"] = speed_of_passes(baseline_latency, metrics["latency"], len(self.val_dataset))
        drop = -info["map_diff_points"]
        info["gate"] = "passed" if drop <= self.max_map_drop else "kept anyway"
        if drop > self.max_map_drop and not self.keep_anyway:
            info["gate"] = "refused"
            return drop
        return None


def _export_int8(
    output: Path, report: dict[str, Any], calib_images: list[np.ndarray], options: Optional[Int8Options], gate: Int8Gate
) -> None:
    """Quantise the verified fp32 ``output`` to ``MODEL.int8.onnx``, time it against fp32 and gate it.

    Fills ``report["int8"]``: path, calibration and options (:func:`quantize_int8`), ``speed``
    (:func:`speed_of_passes` of the validation passes, else :func:`compare_latency`), ``gate`` (``passed``, ``kept anyway`` or ``not
    checked``), and with a validation split its metrics, ``map_diff_points`` (INT8 minus fp32 ONNX) and
    ``max_map_drop``. The file is evaluated at its temporary path, so a refused model is never renamed to
    ``MODEL.int8.onnx``.
    """
    int8_path = int8_path_for(output)
    with atomic_path(int8_path) as tmp:
        calibration = quantize_int8(output, tmp, calib_images, options)
        smoke_run(tmp, calib_images)
        info = report["int8"] = {"output": str(int8_path), **calibration, "max_map_drop": gate.max_map_drop}
        dataset = gate.val_dataset
        if dataset is None:
            info["speed"] = compare_latency(output, tmp, calib_images[0])
            info["gate"] = "not checked"
            return
        _, metrics = score_runtime(
            EdgeDetector(tmp).predict_batch,
            dataset,
            score_thresh=gate.score_thresh,
            backend=gate.backend,
            source=str(int8_path),
            progress=gate.progress,
        )
        fp32_map = report["parity"]["onnx"]["map"] or 0.0
        drop = gate.judge(info, metrics, fp32_map, report["parity"]["onnx"]["latency"])
        if drop is not None:
            raise Int8RefusedError(
                f"INT8 model refused: its mAP {100 * (metrics['map'] or 0):.2f} is {drop:.2f} AP points below "
                f"the fp32 ONNX model's {100 * fp32_map:.2f} (> export.int8_max_map_drop={gate.max_map_drop}), "
                f"so {int8_path.name} was not written ({output.name}, fp32 and verified, was kept); deploy "
                "the fp32 model, or try export.int8_exclude=[head], export.int8_calibration=percentile or "
                "more export.calib_images, or raise export.int8_max_map_drop, or keep it anyway (int8_keep_anyway=True)",
                report,
            )


def compare_latency(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    image: np.ndarray,
    *,
    rounds: int = 10,
    warmup: int = 2,
    threads: Optional[int] = None,
) -> dict[str, Any]:
    """Batch-1 latency of the fp32 and INT8 files on ``image``, calls alternating (fp32, INT8, fp32, ...)
    so that both see the same machine load; both sessions get the same ``threads`` (None: onnxruntime's
    default, as :class:`EdgeDetector`). Preprocessing included.

    Returns:
        ``fp32_p50_ms``, ``int8_p50_ms``, ``speedup`` (fp32 p50 / INT8 p50; < 1 means INT8 is slower),
        ``rounds``, ``threads``, ``method`` (how it was measured, for the report), ``cpu``
        (:func:`cpu_int8_support`).
    """
    fp32, int8 = EdgeDetector(fp32_path, threads=threads), EdgeDetector(int8_path, threads=threads)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for i in range(warmup + rounds):
        for name, detector in (("fp32", fp32), ("int8", int8)) if i % 2 == 0 else (("int8", int8), ("fp32", fp32)):
            start = time.perf_counter()
            detector.predict(image)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    p50 = {name: 1000.0 * float(np.median(values)) for name, values in times.items()}
    return {
        "fp32_p50_ms": p50["fp32"],
        "int8_p50_ms": p50["int8"],
        "speedup": p50["fp32"] / p50["int8"],
        "rounds": rounds,
        "threads": threads,
        "method": f"{rounds} alternating calls on one {image.shape[1]}x{image.shape[0]} calibration image",
        "cpu": cpu_int8_support(),
    }


def speed_of_passes(fp32_latency: dict, int8_latency: dict, images: int) -> dict[str, Any]:
    """INT8 against fp32 from the validation passes' own latencies (:func:`latency_summary`): the numbers
    the export report's table shows, so its speed-up line and its table agree.

    Returns:
        ``fp32_p50_ms``, ``int8_p50_ms``, ``speedup`` (fp32 p50 / INT8 p50), ``method``, ``cpu``.
    """
    fp32, int8 = fp32_latency["p50_ms"], int8_latency["p50_ms"]
    return {
        "fp32_p50_ms": fp32,
        "int8_p50_ms": int8,
        "speedup": fp32 / int8,
        "method": f"batch-1 calls over the {images} validation images, one pass per model, as in the table",
        "cpu": cpu_int8_support(),
    }


def cpu_int8_support() -> str:
    """What the x86 CPU offers onnxruntime's INT8 kernels: ``VNNI`` (AVX512-VNNI or AVX-VNNI), ``AVX2, no
    VNNI`` (u8s8 dot products in 16-bit steps, a smaller INT8 gain) or ``unknown`` (not Linux/x86)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    if {"avx512_vnni", "avx_vnni"} & set(flags):
        return "VNNI"
    return "AVX2, no VNNI" if "avx2" in flags else ("unknown" if not flags else "no AVX2")


@dataclasses.dataclass
class TorchReference:
    """PyTorch's detections on a validation split (one dict per image) and their metrics: what every file
    exported from the model is compared with."""

    predictions: list[dict[str, Any]]
    metrics: dict[str, Any]


def torch_reference(
    model: nn.Module,
    dataset: DatasetRecords,
    *,
    score_thresh: float = 0.001,
    backend: str = "hotcoco",
    progress: bool = False,
) -> TorchReference:
    """Run ``dataset`` through ``model`` on the CPU and score it (:func:`score_runtime`)."""
    from detect_ft.evaluation.evaluator import torch_predictor

    predictions, metrics = score_runtime(
        torch_predictor(model, "cpu"),
        dataset,
        score_thresh=score_thresh,
        backend=backend,
        source="PyTorch model",
        progress=progress,
    )
    return TorchReference(predictions, metrics)


def verify_export(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    dataset: DatasetRecords,
    *,
    max_map_drop: float = 0.5,
    score_thresh: float = 0.001,
    backend: str = "hotcoco",
    progress: bool = False,
    runtime: Callable[[str | os.PathLike], EdgeDetector] = EdgeDetector,
    name: str = "ONNX model",
    reference: Optional[TorchReference] = None,
) -> dict[str, Any]:
    """Run ``dataset`` through PyTorch (CPU) and the exported file (``runtime``: :class:`EdgeDetector` or
    a subclass such as the OpenVINO one; ``name`` says which in messages), compare detections, gate on the
    mAP difference. ``reference``: PyTorch's run on ``dataset`` already made (:func:`torch_reference`),
    so that a second exported file is compared without running PyTorch again.

    Returns:
        ``torch``, ``onnx`` (the exported file's map, map50, latency), ``detections``
        (:func:`compare_detections`) and ``map_diff_points`` (exported minus PyTorch).
    """
    if reference is None:
        reference = torch_reference(model, dataset, score_thresh=score_thresh, backend=backend, progress=progress)
    torch_preds, torch_metrics = reference.predictions, reference.metrics
    onnx_preds, onnx_metrics = score_runtime(
        runtime(onnx_path).predict_batch,
        dataset,
        score_thresh=score_thresh,
        backend=backend,
        source=name,
        progress=progress,
    )
    detections = compare_detections(torch_preds, onnx_preds)
    check_map_drop(torch_metrics["map"], onnx_metrics["map"], max_map_drop, f"exported {name}")
    return {
        "torch": _summary(torch_metrics),
        "onnx": _summary(onnx_metrics),
        "detections": detections,
        "map_diff_points": 100 * ((onnx_metrics["map"] or 0) - (torch_metrics["map"] or 0)),
        "images": len(dataset),
    }


def _summary(metrics: dict) -> dict[str, Any]:
    return {"map": metrics["map"], "map50": metrics["map50"], "latency": metrics["latency"]}


def smoke_run(
    path: str | os.PathLike,
    images: Optional[Sequence[np.ndarray]],
    runtime: Callable[[str | os.PathLike], EdgeDetector] = EdgeDetector,
    engine: str = "onnxruntime",
) -> None:
    """Run the graph once in ``runtime`` (named ``engine`` in errors), so a file that loads but cannot
    execute is never kept."""
    image = images[0] if images else np.full((96, 128, 3), 127, np.uint8)
    try:
        runtime(path).predict(image)
    except DetectFTError:
        raise
    except Exception as exc:
        raise DetectFTError(
            f"the exported graph does not run in {engine} ({str(exc).splitlines()[0]}); "
            "try another opset (export.opset)"
        ) from exc
