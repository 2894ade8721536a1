"""``detect-ft export --format openvino``: an OpenVINO IR (fp32) converted from the verified ONNX export.

The ONNX model is exported and verified as for ``--format onnx`` (:func:`~detect_ft.export.pipeline.export_detector`)
into a temporary folder beside the output, converted by ``openvino.convert_model`` and saved with
``compress_to_fp16=False`` (fp32 weights), with the ONNX file's ``detect_ft`` metadata in the IR's
``rt_info``. The IR is then run through :class:`~detect_ft.inference.openvino_runtime.OpenVINODetector` and,
with a validation split, passes the same parity check against PyTorch before ``MODEL.xml`` and
``MODEL.bin`` are moved into place; a failed check leaves neither. With INT8 the written fp32 IR is then
quantised by NNCF (:mod:`detect_ft.export.openvino_int8`), run, scored on the validation split and gated
like the ONNX INT8 file: when its mAP is more than ``int8_max_map_drop`` AP points below PyTorch's it is
refused (:class:`~detect_ft.export.pipeline.Int8RefusedError`; ``MODEL.int8.xml`` is not written, the fp32 IR
stays) unless ``int8_keep_anyway``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch.nn as nn

from detect_ft.export.openvino_int8 import import_nncf, quantize_openvino
from detect_ft.export.parity import score_runtime
from detect_ft.export.pipeline import (
    Int8Gate,
    Int8RefusedError,
    TorchReference,
    export_detector,
    smoke_run,
    torch_reference,
    verify_export,
)
from detect_ft.inference.openvino_runtime import OpenVINODetector, import_openvino
from detect_ft.inference.predictions import METADATA_KEY, read_onnx_metadata
from detect_ft.utils.errors import DetectFTError


def openvino_output(output: str | os.PathLike) -> Path:
    """The IR's ``.xml`` path for ``output`` (``model.onnx`` or ``model`` becomes ``model.xml``)."""
    output = Path(output)
    return output if output.suffix.lower() == ".xml" else output.with_suffix(".xml")


def export_openvino(model: nn.Module, output: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Export ``model`` to an OpenVINO IR at ``output`` (``.xml``, weights in the ``.bin`` beside it).

    ``options`` are :func:`~detect_ft.export.pipeline.export_detector`'s (the ONNX export and its parity
    check). With ``int8`` the written fp32 IR is quantised by NNCF into ``MODEL.int8.xml``
    (:func:`_export_int8_ir`); the ONNX file's INT8 options (``int8_options``) do not apply.

    Returns:
        export_detector's report with ``output`` the ``.xml``, ``format`` ``openvino`` and ``openvino``
        (``parity``: :func:`verify_export` of the IR against PyTorch, with a validation split); with
        ``int8`` also ``int8`` as for ONNX (the INT8 IR's path, calibration, metrics and ``gate``).

    Raises:
        Int8RefusedError: the INT8 IR lost more than ``int8_max_map_drop`` AP points against PyTorch (the
            fp32 IR was written; the INT8 IR was not).
    """
    import_openvino()
    int8 = bool(options.pop("int8", False))
    if int8:
        import_nncf()  # before any work, so a missing extra is one line and writes nothing
        if options.get("batch", 1) > 1:
            raise DetectFTError(
                f"INT8 export is at batch 1 only (asked for batch {options['batch']}); export INT8 at batch 1, "
                "or leave out INT8"
            )
        if not options.get("calib_images"):
            raise DetectFTError("INT8 export needs calibration images; pass some from the training split (data.train)")
    xml = openvino_output(output)
    xml.parent.mkdir(parents=True, exist_ok=True)
    val = options.get("val_dataset")
    checks = {key: options[key] for key in ("max_map_drop", "score_thresh", "backend", "progress") if key in options}
    if val is not None:  # PyTorch runs the split once; the ONNX file and the IRs are all compared with it
        scoring = {key: value for key, value in checks.items() if key != "max_map_drop"}
        checks["reference"] = torch_reference(model.eval().cpu(), val, **scoring)
    work = Path(tempfile.mkdtemp(prefix=f".{xml.stem}.", dir=xml.parent))
    try:
        report = export_detector(model, work / f"{xml.stem}.onnx", **options, reference=checks.get("reference"))
        convert_to_ir(work / f"{xml.stem}.onnx", work / xml.name)
        smoke_run(work / xml.name, options.get("calib_images"), OpenVINODetector, "OpenVINO")
        report.update(output=str(xml), format="openvino", openvino={})
        if val is not None:
            report["openvino"]["parity"] = verify_export(
                model, work / xml.name, val, runtime=OpenVINODetector, name="OpenVINO model", **checks
            )
        _move_ir(work / xml.name, xml)
        if int8:
            gate = Int8Gate(val, **_gate_options(options))
            _export_int8_ir(xml, work, report, list(options["calib_images"]), gate, checks.get("reference"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def convert_to_ir(onnx_path: str | os.PathLike, xml: str | os.PathLike) -> None:
    """Convert the detect-ft ONNX file ``onnx_path`` with ``openvino.convert_model`` and save it as ``xml``
    (+ ``.bin``) with fp32 weights and the ONNX file's ``detect_ft`` metadata in ``rt_info``; unverified."""
    ov = import_openvino()
    ir = ov.convert_model(os.fspath(onnx_path))
    ir.set_rt_info(json.dumps(read_onnx_metadata(onnx_path)), [METADATA_KEY])
    ov.save_model(ir, os.fspath(xml), compress_to_fp16=False)


def int8_ir_path(xml: str | os.PathLike) -> Path:
    """``MODEL.xml`` -> ``MODEL.int8.xml`` beside it (its weights: ``MODEL.int8.bin``)."""
    xml = Path(xml)
    return xml.with_name(f"{xml.stem}.int8.xml")


def _move_ir(source: Path, xml: Path) -> None:
    """Move the IR ``source`` (and its ``.bin``) to ``xml``, the weights first so that an ``.xml`` in place
    always has its weights."""
    os.replace(source.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(source, xml)


def _gate_options(options: dict[str, Any]) -> dict[str, Any]:
    """:class:`Int8Gate`'s fields from export_detector's ``int8_*`` and scoring options."""
    names = {"int8_max_map_drop": "max_map_drop", "int8_keep_anyway": "keep_anyway"}
    names.update({key: key for key in ("score_thresh", "backend", "progress")})
    return {field: options[key] for key, field in names.items() if key in options}


def _export_int8_ir(
    xml: Path, work: Path, report: dict[str, Any], images: list, gate: Int8Gate, reference: Optional[TorchReference]
) -> None:
    """Quantise the written fp32 IR ``xml`` into ``work`` and, once it runs and passes the gate, move it to
    ``MODEL.int8.xml``.

    Fills ``report["int8"]``: path, calibration (:func:`quantize_openvino`), ``max_map_drop``, ``gate``
    (``passed``, ``kept anyway``, ``refused`` or ``not checked``) and with a validation split the INT8 IR's
    ``map``, ``map50``, ``latency`` and ``map_diff_points`` (INT8 IR minus PyTorch).
    """
    target = int8_ir_path(xml)
    staged = work / target.name
    calibration = quantize_openvino(xml, staged, images)
    smoke_run(staged, images, OpenVINODetector, "OpenVINO")
    info = report["int8"] = {"output": str(target), **calibration, "max_map_drop": gate.max_map_drop}
    info.update(gate="not checked", runtime="openvino int8", baseline="PyTorch", speed_baseline="fp32 OpenVINO")
    if gate.val_dataset is not None and reference is not None:
        _, metrics = score_runtime(
            OpenVINODetector(staged).predict_batch,
            gate.val_dataset,
            score_thresh=gate.score_thresh,
            backend=gate.backend,
            source=str(target),
            progress=gate.progress,
        )
        torch_map = reference.metrics["map"] or 0.0
        drop = gate.judge(info, metrics, torch_map, report["openvino"]["parity"]["onnx"]["latency"])
        if drop is not None:
            raise Int8RefusedError(
                f"INT8 OpenVINO model refused: its mAP {100 * (metrics['map'] or 0):.2f} is {drop:.2f} AP points "
                f"below PyTorch's {100 * torch_map:.2f} (> export.int8_max_map_drop={gate.max_map_drop}), so "
                f"{target.name} was not written ({xml.name}, fp32 and verified, was kept); deploy the fp32 "
                "model, or use more export.calib_images, or raise export.int8_max_map_drop, or keep it anyway "
                "(int8_keep_anyway=True)",
                report,
            )
    _move_ir(staged, target)
