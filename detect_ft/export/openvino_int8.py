"""INT8 OpenVINO IR by NNCF post-training quantisation of the verified fp32 IR (``export --format openvino --int8``).

Calibration images go through exactly the runtime's preprocessing (:func:`~detect_ft.inference.runtime.preprocess`
with the IR's own metadata), the same training images the ONNX INT8 path calibrates on. As there, only the
network body is quantised (:func:`body_nodes`): the convolutions and the ReLU/Clamp/Pad/residual Add on their
feature maps; the graph's resize/normalisation before the first convolution and the post-processing (box
decoding, score thresholds, TopK, NMS) are NNCF's ``ignored_scope`` and stay in float, where INT8 would move
boxes by whole quantisation steps and change which detections survive NMS. NNCF is part of the optional
``detect-ft[openvino]`` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Any, Sequence

import numpy as np

from detect_ft.inference.openvino_runtime import INSTALL_HINT, import_openvino, kept_signal_stack, read_ir_metadata
from detect_ft.inference.predictions import METADATA_KEY
from detect_ft.inference.runtime import preprocess
from detect_ft.utils.errors import DetectFTError

# OpenVINO op types that make a feature map: always quantised, as the ONNX path's Conv/MatMul/Gemm.
IR_CONV_OPS = ("Convolution", "GroupConvolution", "MatMul")
# Ops quantised when their data input is a feature map (Add: both inputs, or a constant bias), as the ONNX
# path's fused Clip/Relu/Add/Pad; anything else (Reshape, Concat, Multiply, Exp, ...) ends the body.
IR_FUSED_OPS = ("Add", "Clamp", "Relu", "Pad")


def import_nncf() -> Any:
    """The ``nncf`` module; DetectFTError naming the extra to install when it is not importable."""
    try:
        import nncf
    except ImportError:
        raise DetectFTError(f"OpenVINO INT8 export needs the nncf package; install it with {INSTALL_HINT}") from None
    return nncf


def body_nodes(model: Any) -> list[str]:
    """Friendly names of the ops of ``model`` (an ``openvino.Model``) that work on convolution feature maps.

    Convolutions always; Clamp/Relu/Pad when their first input is a feature map; Add when each input is a
    feature map or a constant (the bias of a convolution). A feature map is the output of such an op.
    """
    features: set[str] = set()
    chosen: list[str] = []
    for op in model.get_ordered_ops():  # topologically sorted
        kind, name = op.get_type_name(), op.get_friendly_name()
        parents = [value.get_node() for value in op.input_values()]
        if kind in IR_CONV_OPS:
            ok = True
        elif kind == "Add":
            ok = any(p.get_friendly_name() in features for p in parents) and all(
                p.get_friendly_name() in features or p.get_type_name() == "Constant" for p in parents
            )
        elif kind in IR_FUSED_OPS:
            ok = bool(parents) and parents[0].get_friendly_name() in features
        else:
            ok = False
        if ok:
            chosen.append(name)
            features.add(name)
    return chosen


def quantize_openvino(
    fp32_xml: str | os.PathLike, int8_xml: str | os.PathLike, images: Sequence[np.ndarray]
) -> dict[str, Any]:
    """Write an INT8 copy of the fp32 IR ``fp32_xml`` to ``int8_xml`` (and its ``.bin``).

    Args:
        images: calibration images, RGB uint8 (H, W, 3), any sizes (the graph resizes them).

    Returns:
        ``{"calibration_images": n, "quantized_nodes": count, "description": "..."}``. The IR's
        ``detect_ft`` metadata is copied over with ``"quantization"`` added, so the runtime reads the INT8
        IR like the fp32 one.
    """
    ov, nncf = import_openvino(), import_nncf()
    if not images:
        raise DetectFTError(
            "INT8 calibration needs at least one training image; set export.calib_images >= 1 "
            "and check that data.train has images"
        )
    model = ov.Core().read_model(os.fspath(fp32_xml))
    meta = read_ir_metadata(model, fp32_xml)
    spec = meta["input"]
    body = set(body_nodes(model))
    if not body:
        raise DetectFTError(f"{fp32_xml}: no convolution found to quantise; export fp32 instead")
    kept_float = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_friendly_name() not in body]
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # NNCF logs every float op it leaves alone (hundreds of lines) at INFO
    try:
        # NNCF's progress bars go to stderr (stdout is the command's report); it compiles models as it goes.
        with contextlib.redirect_stdout(sys.stderr), kept_signal_stack():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(list(images), lambda image: preprocess(image, spec)),
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=len(images),
                ignored_scope=nncf.IgnoredScope(names=kept_float, validate=False),
            )
    finally:
        nncf_log.setLevel(level)
    description = "NNCF post-training quantisation, symmetric int8 weights and activations, body only"
    meta["quantization"] = {
        "tool": f"nncf {nncf.__version__}",
        "description": description,
        "calibration_images": len(images),
        "quantized_nodes": len(body),
    }
    quantized.set_rt_info(json.dumps(meta), [METADATA_KEY])
    ov.save_model(quantized, os.fspath(int8_xml), compress_to_fp16=False)
    return {"calibration_images": len(images), "quantized_nodes": len(body), "description": description}
