"""``detect-ft export --format openvino``: an OpenVINO IR (fp32) converted from the verified ONNX export.

The ONNX model is exported and verified as for ``--format onnx`` (:func:`~detect_ft.export.pipeline.export_detector`)
into a temporary folder beside the output, converted by ``openvino.convert_model`` and saved with
``compress_to_fp16=False`` (fp32 weights), with the ONNX file's ``detect_ft`` metadata in the IR's
``rt_info``. The IR is then run through :class:`~detect_ft.inference.openvino_runtime.OpenVINODetector` and,
with a validation split, passes the same parity check against PyTorch before ``MODEL.xml`` and
``MODEL.bin`` are moved into place; a failed check leaves neither. INT8 is not offered for OpenVINO yet.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch.nn as nn

from detect_ft.export.pipeline import export_detector, smoke_run, torch_reference, verify_export
from detect_ft.inference.openvino_runtime import OpenVINODetector, import_openvino
from detect_ft.inference.predictions import METADATA_KEY, read_onnx_metadata
from detect_ft.utils.errors import DetectFTError

INT8_REFUSAL = "INT8 for OpenVINO is not available yet; export fp32 or use the ONNX INT8 export"


def openvino_output(output: str | os.PathLike) -> Path:
    """The IR's ``.xml`` path for ``output`` (``model.onnx`` or ``model`` becomes ``model.xml``)."""
    output = Path(output)
    return output if output.suffix.lower() == ".xml" else output.with_suffix(".xml")


def export_openvino(model: nn.Module, output: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Export ``model`` to an OpenVINO IR at ``output`` (``.xml``, weights in the ``.bin`` beside it).

    ``options`` are :func:`~detect_ft.export.pipeline.export_detector`'s (the ONNX export and its parity
    check); ``int8`` is refused.

    Returns:
        export_detector's report with ``output`` the ``.xml``, ``format`` ``openvino`` and ``openvino``
        (``parity``: :func:`verify_export` of the IR against PyTorch, with a validation split).
    """
    if options.get("int8"):
        raise DetectFTError(INT8_REFUSAL)
    ov = import_openvino()
    xml = openvino_output(output)
    xml.parent.mkdir(parents=True, exist_ok=True)
    val = options.get("val_dataset")
    checks = {key: options[key] for key in ("max_map_drop", "score_thresh", "backend", "progress") if key in options}
    if val is not None:  # PyTorch runs the split once; the ONNX file and the IR are both compared with it
        scoring = {key: value for key, value in checks.items() if key != "max_map_drop"}
        checks["reference"] = torch_reference(model.eval().cpu(), val, **scoring)
    work = Path(tempfile.mkdtemp(prefix=f".{xml.stem}.", dir=xml.parent))
    try:
        report = export_detector(model, work / f"{xml.stem}.onnx", **options, reference=checks.get("reference"))
        meta = read_onnx_metadata(work / f"{xml.stem}.onnx")
        ir = ov.convert_model(os.fspath(work / f"{xml.stem}.onnx"))
        ir.set_rt_info(json.dumps(meta), [METADATA_KEY])
        ov.save_model(ir, os.fspath(work / xml.name), compress_to_fp16=False)
        smoke_run(work / xml.name, options.get("calib_images"), OpenVINODetector, "OpenVINO")
        report.update(output=str(xml), format="openvino", openvino={})
        if val is not None:
            report["openvino"]["parity"] = verify_export(
                model, work / xml.name, val, runtime=OpenVINODetector, name="OpenVINO model", **checks
            )
        os.replace(work / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(work / xml.name, xml)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report
