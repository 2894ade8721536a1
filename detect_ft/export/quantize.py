"""INT8 static quantisation of an exported detector with onnxruntime.

Calibration images go through exactly the edge runtime's preprocessing. What is quantised, and how, is an
:class:`Int8Options` (the ``export.int8_*`` config keys); the default is the variant measured best on
``ssdlite320_efficientnet_lite0`` (docs/benchmarks.md, "INT8 for ssdlite320_efficientnet_lite0"): QDQ
format, per-channel INT8 weights, UINT8 activations calibrated with MinMax, and the convolutions *with*
the ReLU6/ReLU (``Clip``/``Relu``), residual ``Add`` and ``Pad`` around them, so that onnxruntime fuses
them into chains of integer kernels instead of converting back to float after every convolution; then
:func:`~detect_ft.export.qdq_graph.simplify_qdq` removes the float round trips that onnxruntime's QDQ
fusion leaves (around Pad, and DequantizeLinear nodes read only by Shape). Only the network body is
touched (:func:`_feature_nodes`): the graph's own resize/normalisation and the post-processing (box
decoding, score thresholds, TopK, NMS) stay in float, where INT8 would move boxes by whole quantisation
steps and change which detections survive NMS.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detect_ft.export.qdq_graph import simplify_qdq
from detect_ft.inference.predictions import read_onnx_metadata
from detect_ft.inference.runtime import preprocess
from detect_ft.utils.errors import DetectFTError

CONV_OPS = ("Conv", "MatMul", "Gemm")
# Ops quantised with the default ``ops="fused"``: the convolutions plus what sits between two of them in
# CNN bodies. Clip/Relu are folded into the preceding convolution's output range, Add becomes QLinearAdd,
# Pad is done on uint8; without them every convolution is followed by DequantizeLinear/QuantizeLinear.
FUSED_OPS = CONV_OPS + ("Clip", "Relu", "Add", "Pad")
OP_SETS = {"conv": CONV_OPS, "fused": FUSED_OPS}
FORMATS = ("qdq", "qoperator")
CALIBRATIONS = ("minmax", "percentile", "entropy")
# ``exclude`` keywords; any other entry is a substring of node names (e.g. "/model/head/").
EXCLUDE_KEYWORDS = {
    "first": "the first convolution (the stem, which sees the normalised image)",
    "last": "the last convolution of each output branch (the ones producing class scores and box offsets)",
    "head": "every node of the detection head (module path /model/head/ or /model/roi_heads/)",
}
HEAD_MARKERS = ("/model/head/", "/model/roi_heads/", "/model/rpn/head/")


@dataclasses.dataclass(frozen=True)
class Int8Options:
    """How :func:`quantize_int8` quantises (the ``export.int8_*`` keys of the config).

    Attributes:
        format: ``qdq`` (QuantizeLinear/DequantizeLinear around float ops; onnxruntime fuses them into
            integer kernels when the session is created) or ``qoperator`` (QLinearConv etc. in the file).
        per_channel: one weight scale per output channel (False: one per tensor).
        calibration: activation ranges from ``minmax``, ``percentile`` (the central ``percentile`` % of
            the values) or ``entropy`` (KL divergence, :data:`ENTROPY_BINS` bins) over the images.
        reduce_range: 7-bit weights (onnxruntime's fix for the u8s8 overflow of non-VNNI x86 kernels).
        ops: ``fused`` (:data:`FUSED_OPS`) or ``conv`` (:data:`CONV_OPS` only, the old default).
        exclude: nodes kept in float: keywords of :data:`EXCLUDE_KEYWORDS` and/or node-name substrings.
        percentile: for ``calibration="percentile"``.
    """

    format: str = "qdq"
    per_channel: bool = True
    calibration: str = "minmax"
    reduce_range: bool = False
    ops: str = "fused"
    exclude: tuple[str, ...] = ()
    percentile: float = 99.999

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))
        for key, value, allowed in (
            ("format", self.format, FORMATS),
            ("calibration", self.calibration, CALIBRATIONS),
            ("ops", self.ops, tuple(OP_SETS)),
        ):
            if value not in allowed:
                raise DetectFTError(f"export.int8_{key}={value!r} is not one of {', '.join(allowed)}")
        if not 0 < self.percentile <= 100:
            raise DetectFTError(f"INT8 percentile {self.percentile} must be in (0, 100]")

    def describe(self) -> str:
        """One line, e.g. ``qdq, per-channel, minmax, ops=fused``."""
        parts = [self.format, "per-channel" if self.per_channel else "per-tensor", self.calibration, f"ops={self.ops}"]
        if self.calibration == "percentile":
            parts[2] = f"percentile {self.percentile}"
        if self.reduce_range:
            parts.append("reduce_range")
        if self.exclude:
            parts.append("fp32: " + "+".join(self.exclude))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "exclude": list(self.exclude)}


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


def excluded_nodes(graph, exclude: Sequence[str], op_types: Sequence[str]) -> list[str]:
    """Names of the nodes of ``graph`` (an ``onnx.GraphProto``) that ``exclude`` keeps in float.

    Keywords (:data:`EXCLUDE_KEYWORDS`) resolve over the nodes whose type is in ``op_types``; any other
    entry matches every node whose name contains it. Raises when an entry matches nothing, so a typo does
    not silently quantise everything.
    """
    nodes = [node for node in graph.node if node.op_type in op_types]
    convs = [node for node in nodes if node.op_type in CONV_OPS]
    names: list[str] = []
    for entry in exclude:
        if entry == "first":
            found = [convs[0].name] if convs else []
        elif entry == "head":
            found = [n.name for n in nodes if any(marker in n.name for marker in HEAD_MARKERS)]
        elif entry == "last":
            found = _last_convs(graph, convs)
        else:
            found = [n.name for n in nodes if entry in n.name]
        if not found:
            raise DetectFTError(
                f"export.int8_exclude entry {entry!r} matches no quantisable node of the graph; "
                f"use one of {', '.join(EXCLUDE_KEYWORDS)} or a substring of a node name"
            )
        names += [name for name in found if name not in names]
    return names


def _last_convs(graph, convs) -> list[str]:
    """Convolutions whose output reaches a graph output without passing through another convolution."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    conv_names = {node.name for node in convs}
    last = []
    for conv in convs:
        frontier, seen, feeds_conv = list(conv.output), set(), False
        while frontier and not feeds_conv:
            tensor = frontier.pop()
            for node in consumers.get(tensor, []):
                if node.name in conv_names:
                    feeds_conv = True
                    break
                if node.name not in seen:
                    seen.add(node.name)
                    frontier.extend(node.output)
        if not feeds_conv:
            last.append(conv.name)
    return last


def quantize_int8(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    images: Sequence[np.ndarray],
    options: Optional[Int8Options] = None,
) -> dict:
    """Write an INT8 copy of the exported model ``fp32_path`` to ``int8_path``.

    Args:
        images: calibration images, RGB uint8 (H, W, 3), any sizes (the graph resizes them).
        options: what to quantise and how (default: :class:`Int8Options` ``()``).

    Returns:
        ``{"calibration_images": n, "quantized_ops": [...], "options": {...}, "excluded_nodes": [...],
        "description": "..."}``. The detect-ft metadata is copied over with ``"quantization"`` added, so
        the edge runtime reads the INT8 file like the fp32 one.
    """
    import onnx

    from detect_ft.export.onnx_export import set_metadata

    options = options or Int8Options()
    if not images:
        raise DetectFTError(
            "INT8 calibration needs at least one training image; set export.calib_images >= 1 "
            "and check that data.train has images"
        )
    meta = read_onnx_metadata(fp32_path)
    reader = ImageCalibrationReader(images, meta["input"])
    op_types = _op_types(options)
    with tempfile.TemporaryDirectory(prefix="detect_ft_int8_") as tmp:
        proto, excluded = _quantize_static(fp32_path, Path(tmp), reader, options, op_types)
    simplified = simplify_qdq(proto.graph) if options.format == "qdq" else {}
    onnx.checker.check_model(proto)
    meta["quantization"] = {
        "format": options.format.upper(),
        "weights": "int8 " + ("per-channel" if options.per_channel else "per-tensor"),
        "activations": "uint8",
        "calibration": options.calibration,
        "calibration_images": len(images),
        "ops": op_types,
        "excluded_nodes": excluded,
        "reduce_range": options.reduce_range,
    }
    set_metadata(proto, meta)
    onnx.save(proto, os.fspath(int8_path))
    return {
        "calibration_images": len(images),
        "quantized_ops": op_types,
        "options": options.to_dict(),
        "excluded_nodes": excluded,
        "description": options.describe(),
        "simplified": simplified,
    }


def _op_types(options: Int8Options) -> list[str]:
    """The op types ``options`` quantises."""
    op_types = list(OP_SETS[options.ops])
    if options.format == "qoperator" and "Pad" in op_types:
        # onnxruntime's QOperator quantiser folds a Clip into the QLinearConv before it and then wires the
        # following QPad to a renamed tensor, which makes a cycle ("Graph is not a DAG"); Pad stays float.
        op_types.remove("Pad")
    return op_types


def _quantize_static(
    fp32_path: str | os.PathLike, tmp: Path, reader: ImageCalibrationReader, options: Int8Options, op_types: list[str]
):
    """Run onnxruntime's ``quantize_static`` on the feature nodes of ``fp32_path`` (work files in ``tmp``).

    Returns:
        ``(proto, excluded)``: the quantised ``onnx.ModelProto`` and the names of the nodes kept in float.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibration = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[options.calibration]
    extra: dict[str, Any] = {}
    if options.calibration == "percentile":
        # Cut (100 - percentile) / 2 % of the values on each side (onnxruntime's default cuts |x|, which
        # wastes half the uint8 range of a signed tensor).
        extra.update(CalibPercentile=options.percentile, CalibTensorRangeSymmetric=False)
    prepared = tmp / "prepared.onnx"
    # Shape inference + constant folding first, as onnxruntime recommends; symbolic shape inference
    # cannot follow the data-dependent shapes after NMS, so only the ONNX shape inference runs.
    quant_pre_process(os.fspath(fp32_path), os.fspath(prepared), skip_symbolic_shape=True)
    graph = onnx.load(os.fspath(prepared)).graph
    excluded = excluded_nodes(graph, options.exclude, op_types)
    selected = [name for name in _feature_nodes(graph, op_types) if name not in excluded]
    if not selected:
        raise DetectFTError(f"export.int8_exclude={list(options.exclude)} leaves no node to quantise; exclude less")
    if options.calibration == "entropy":
        extra["TensorQuantOverrides"] = _entropy_ranges(prepared, reader, op_types, tmp / "augmented.onnx")
    quantized = tmp / "int8.onnx"
    quantize_static(
        os.fspath(prepared),
        os.fspath(quantized),
        reader,
        quant_format=QuantFormat.QDQ if options.format == "qdq" else QuantFormat.QOperator,
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        op_types_to_quantize=op_types,
        nodes_to_quantize=selected,
        nodes_to_exclude=excluded,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax if options.calibration == "entropy" else calibration,
        extra_options=extra,
    )
    return onnx.load(os.fspath(quantized)), excluded


def _feature_nodes(graph, op_types: Sequence[str]) -> list[str]:
    """Names of the ``op_types`` nodes that work on convolution feature maps.

    Convolutions (and MatMul/Gemm) always; Clip/Relu/Pad when their data input is a feature map; Add when
    both inputs are. A feature map is the output of such a node. This keeps the graph's own resize and
    normalisation (before the first convolution) and the box decoding after the head (Add/Clip on boxes)
    in float, whatever ``op_types`` lists.
    """
    features: set[str] = set()
    chosen: list[str] = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type not in op_types:
            continue
        if node.op_type in CONV_OPS:
            ok = True
        elif node.op_type == "Add":
            ok = len(node.input) == 2 and all(name in features for name in node.input)
        else:  # Clip, Relu, Pad: the data input is the first
            ok = bool(node.input) and node.input[0] in features
        if ok:
            chosen.append(node.name)
            features.update(node.output)
    return chosen


ENTROPY_BINS = 512  # histogram bins of the entropy calibration (onnxruntime's default, 128, leaves no choice)


def _entropy_ranges(prepared: Path, reader: ImageCalibrationReader, op_types: Sequence[str], augmented: Path) -> dict:
    """KL-divergence (TensorRT-style) activation ranges as ``TensorQuantOverrides``.

    ``quantize_static`` builds its entropy calibrator with 128 histogram bins and 128 quantised bins, so
    the only candidate threshold is the full range and "entropy" is MinMax; the calibrator is run here
    with :data:`ENTROPY_BINS` bins instead.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(
        prepared,
        list(op_types),
        augmented_model_path=os.fspath(augmented),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": 128},
    )
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    reader.rewind()
    overrides = {}
    for name, data in ranges.data.items():
        low, high = data.range_value
        overrides[name] = [{"rmin": np.asarray(low, np.float32), "rmax": np.asarray(high, np.float32)}]
    return overrides


def int8_path_for(output: str | os.PathLike) -> Path:
    """``MODEL.onnx`` -> ``MODEL.int8.onnx`` beside it."""
    output = Path(output)
    stem = output.name[: -len(".onnx")] if output.name.lower().endswith(".onnx") else output.name
    return output.with_name(f"{stem}.int8.onnx")
