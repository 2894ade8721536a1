"""INT8 static quantisation of an exported detector with onnxruntime.

QDQ format, per-channel INT8 weights, UINT8 activations calibrated (MinMax) on training images that go
through exactly the edge runtime's preprocessing. Only Conv/MatMul/Gemm are quantised: the
post-processing (box decoding, score thresholds, TopK, NMS) stays in float, where INT8 would move boxes
by whole quantisation steps and change which detections survive NMS.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detect_ft.edge.runtime import preprocess, read_metadata
from detect_ft.errors import DetectFTError

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` feeding RGB uint8 images (H, W, 3) through ``preprocess``."""

    def __init__(self, images: Sequence[np.ndarray], input_spec: dict[str, Any]) -> None:
        self._all = list(images)
        self._images = iter(self._all)
        self._spec = input_spec
        self.count = 0

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        image = next(self._images, None)
        if image is None:
            return None
        self.count += 1
        return {self._spec["name"]: preprocess(image, self._spec)}

    def rewind(self) -> None:
        self._images = iter(self._all)
        self.count = 0


def quantize_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, images: Sequence[np.ndarray]) -> dict:
    """Write an INT8 (QDQ, per-channel) copy of the exported model ``fp32_path`` to ``int8_path``.

    Args:
        images: calibration images, RGB uint8 (H, W, 3), any sizes (the graph resizes them).

    Returns:
        ``{"calibration_images": n, "quantized_ops": [...]}``. The detect-ft metadata is copied over
        with ``"quantization"`` added, so the edge runtime reads the INT8 file like the fp32 one.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from detect_ft.export.onnx_export import set_metadata

    if not images:
        raise DetectFTError("INT8 calibration needs at least one training image; set export.calib_images >= 1 "
                            "and check that data.train has images")  # fmt: skip
    meta = read_metadata(fp32_path)
    reader = ImageCalibrationReader(images, meta["input"])
    with tempfile.TemporaryDirectory(prefix="detect_ft_int8_") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + constant folding first, as onnxruntime recommends; symbolic shape inference
        # cannot follow the data-dependent shapes after NMS, so only the ONNX shape inference runs.
        quant_pre_process(os.fspath(fp32_path), os.fspath(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            os.fspath(prepared), os.fspath(quantized), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            op_types_to_quantize=list(QUANTIZED_OPS), activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
        proto = onnx.load(os.fspath(quantized))
    onnx.checker.check_model(proto)
    meta["quantization"] = {"format": "QDQ", "weights": "int8 per-channel", "activations": "uint8",
                            "calibration_images": len(images), "ops": list(QUANTIZED_OPS)}  # fmt: skip
    set_metadata(proto, meta)
    onnx.save(proto, os.fspath(int8_path))
    return {"calibration_images": len(images), "quantized_ops": list(QUANTIZED_OPS)}


def int8_path_for(output: str | os.PathLike) -> Path:
    """``MODEL.onnx`` -> ``MODEL.int8.onnx`` beside it."""
    output = Path(output)
    stem = output.name[: -len(".onnx")] if output.name.lower().endswith(".onnx") else output.name
    return output.with_name(f"{stem}.int8.onnx")
