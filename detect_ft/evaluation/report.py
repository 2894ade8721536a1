"""Metrics as text: the terminal table of ``detect-ft eval`` and markdown tables for benchmarks.

Undefined values (a size bucket or class without ground truth) print as ``n/a``, never as 0 or -1.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

OVERALL = (
    ("map", "AP @[.50:.95]"),
    ("map50", "AP @.50"),
    ("map75", "AP @.75"),
    ("map_small", "AP small"),
    ("map_medium", "AP medium"),
    ("map_large", "AP large"),
    ("mar_1", "AR maxDets 1"),
    ("mar_10", "AR maxDets 10"),
    ("mar_100", "AR maxDets 100"),
    ("voc_map50", "VOC AP @.50 (area)"),
    ("overall_f1", "best F1 @.50"),
    ("overall_threshold", "  at confidence"),
)


def fmt(value: Optional[float], digits: int = 3) -> str:
    """A metric in [0, 1] as text; None as ``n/a``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table; the first column is left-aligned, the rest right-aligned."""
    cells = [list(map(str, headers))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def format_metrics(metrics: dict) -> str:
    """Overall and per class tables of a metrics dict from :func:`coco_metrics` (plus the optional
    ``voc_map50``, ``voc_per_class`` and ``num_ground_truth_per_class`` keys ``detect-ft eval`` adds)."""
    overall = [(label, fmt(metrics.get(key))) for key, label in OVERALL if key in metrics]
    counts = metrics.get("num_ground_truth_per_class", {})
    voc = metrics.get("voc_per_class", {})
    thresholds = metrics.get("thresholds", {})
    per_class = [
        (
            name,
            counts.get(name, ""),
            fmt(ap),
            fmt(metrics["per_class_map50"].get(name)),
            fmt(voc.get(name)),
            fmt(thresholds.get(name), 2),
        )
        for name, ap in metrics["per_class"].items()
    ]
    head = (
        f"{metrics.get('num_images', '?')} images, {metrics.get('num_ground_truth', '?')} boxes, "
        f"{metrics.get('num_detections', '?')} detections (backend {metrics.get('backend', '?')})"
    )
    if metrics.get("num_ground_truth") == 0:
        head += "\nno boxes to score: the split has no countable ground-truth boxes, so every AP is n/a"
    return "\n\n".join(
        [
            head,
            format_table(("metric", "value"), overall),
            format_table(("class", "boxes", "AP", "AP50", "VOC AP50", "F1 conf"), per_class),
        ]
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    align = ["---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(map(str, headers)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
