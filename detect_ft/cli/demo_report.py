"""``report.md`` of ``detect-ft demo``, assembled from the files its steps wrote into the run directory."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
from pathlib import Path
from typing import Any

from detect_ft.evaluation.report import OVERALL, fmt, markdown_table
from detect_ft.utils.atomic_io import write_text_atomic


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _link(path: Path, run_dir: Path) -> str:
    relative = os.path.relpath(path, run_dir)
    return f"[{relative}]({relative})"


def _initial_weights(model: dict[str, Any]) -> str:
    from detect_ft.models import MODELS

    weights = model["weights"]
    spec = MODELS.get(model["name"])
    if weights == "imagenet":
        backbone = model.get("backbone") or (spec.timm_backbone if spec else None) or "the backbone"
        return f"ImageNet weights of {backbone} (`model.weights=imagenet`); every detection layer new"
    if weights == "coco":
        return "torchvision's COCO weights (`model.weights=coco`), new class heads"
    if weights == "none":
        return "random initialisation (`model.weights=none`): no pretrained weights were available"
    return f"the weights file `{weights}`"


def write_report(
    run_dir: Path, *, steps: list[tuple[str, list[str]]], seconds: dict[str, float], total_seconds: float
) -> Path:
    """Write ``run_dir/report.md``: the config, the mAP tables, PyTorch vs ONNX, links to plots and pictures.

    Reads ``config.yaml``, ``metrics.jsonl``, ``eval/metrics.json``, ``export.json``, ``plots/``,
    ``eval/*.png`` and ``predictions/`` as the demo's steps left them.
    """
    import yaml

    metrics = _read_json(run_dir / "eval" / "metrics.json")
    export = _read_json(run_dir / "export.json")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lines = _summary_lines(metrics, config, len(epochs), total_seconds)
    lines += _steps_lines(steps, seconds) + _map_lines(metrics) + _parity_lines(export.get("parity"))
    lines += _file_lines(run_dir, Path(export["output"]))
    lines += ["", "## Config", "", "```yaml", (run_dir / "config.yaml").read_text().rstrip(), "```", ""]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def _summary_lines(metrics: dict[str, Any], config: dict[str, Any], epochs: int, total_seconds: float) -> list[str]:
    import torch

    device = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    data = config["data"]
    return [
        "# detect-ft demo report",
        "",
        f"{datetime.date.today().isoformat()} on {platform.machine()} with {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {device}.",
        f"Model {metrics.get('model_name')}, {epochs} epochs; the whole demo took {total_seconds:.0f} s.",
        f"Started from: {_initial_weights(config['model'])}.",
        f"Data: `{data['root']}` ({data['format']}), splits `{data['train']}` and `{data['val']}`.",
        "",
    ]


def _steps_lines(steps: list[tuple[str, list[str]]], seconds: dict[str, float]) -> list[str]:
    rows = [(name, f"`detect-ft {name} {shlex.join(argv)}`", f"{seconds[name]:.0f}") for name, argv in steps]
    return [
        "## Steps",
        "",
        markdown_table(["step", "command", "seconds"], rows),
        f"\nTraining + evaluation + export + prediction: {sum(seconds.values()):.0f} s.",
        "",
    ]


def _map_lines(metrics: dict[str, Any]) -> list[str]:
    overall = [(label, fmt(metrics.get(key))) for key, label in OVERALL if key in metrics]
    per_class = [
        (name, fmt(ap), fmt(metrics["per_class_map50"].get(name))) for name, ap in metrics["per_class"].items()
    ]
    return [
        "## Validation mAP",
        "",
        f"{metrics['num_images']} validation images, {metrics['num_ground_truth']} boxes "
        f"(backend {metrics.get('backend')}).",
        "",
        markdown_table(["metric", "value"], overall),
        "",
        markdown_table(["class", "AP", "AP50"], per_class),
        "",
        "## PyTorch vs ONNX",
        "",
    ]


def _parity_lines(parity: dict[str, Any] | None) -> list[str]:
    if not parity:
        return ["The export ran without the parity check."]
    det = parity["detections"]
    rows = [
        (
            runtime,
            fmt(parity[key]["map"]),
            fmt(parity[key]["map50"]),
            fmt(parity[key]["latency"]["p50_ms"], 1),
            fmt(parity[key]["latency"]["p90_ms"], 1),
        )
        for runtime, key in (("PyTorch (eager)", "torch"), ("ONNX (onnxruntime)", "onnx"))
    ]
    return [
        markdown_table(["runtime", "mAP", "mAP50", "latency p50 (ms)", "latency p90 (ms)"], rows),
        "",
        f"{det['matched']} of {det['reference_detections']} PyTorch detections matched in ONNX (same label, "
        f"IoU >= {det['iou_thresh']}); largest score difference {det['max_score_diff']:.1e}, largest box "
        f"difference {det['max_box_diff']:.1e} px; mAP difference {parity['map_diff_points']:+.2f} AP points.",
        f"Latency is batch 1 on {parity['images']} validation images.",
    ]


def _file_lines(run_dir: Path, onnx_path: Path) -> list[str]:
    """Links to the ONNX model and the plots, and the annotated prediction pictures inline."""
    lines = ["", f"ONNX model: {_link(onnx_path, run_dir)}", "", "## Plots", ""]
    for png in sorted((run_dir / "plots").glob("*.png")) + sorted((run_dir / "eval").glob("*.png")):
        lines.append(f"- {_link(png, run_dir)}")
    lines += ["", "## ONNX predictions on validation images training never saw (edge runtime, torch-free)", ""]
    for image in sorted((run_dir / "predictions").glob("*.png")) + sorted((run_dir / "predictions").glob("*.jpg")):
        lines.append(f"![{image.name}]({os.path.relpath(image, run_dir)})")
    return lines
