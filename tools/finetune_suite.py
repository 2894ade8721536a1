"""Fine-tuning suite: one or more settings on several datasets, each run held to the same wall-clock budget.

    python tools/finetune_suite.py [--datasets raccoon-voc fruits coco128 aquarium | PATH ...]
                                   [--arm NAME:key=value,key=value ...] [--config BASE.yaml]
                                   [--model ssdlite320_efficientnet_lite0] [--minutes 10] [--out runs/suite]
                                   [--reuse] [key=value ...]

Every arm trains ``--model`` on every dataset, one run at a time, with ``train.time_budget`` set to
``--minutes`` (the trainer measures its speed and fits its schedule into that wall time); the trailing
``key=value`` overrides apply to every run, an arm's own after them. Without ``--arm`` the arms are
``imagenet`` (``model.weights=imagenet``) and ``scratch`` (``model.weights=none``): what transfer buys.

Datasets: a name is a folder of ``../shared/datasets`` (read its README); a path is any folder in one of
three layouts: Pascal VOC (``Annotations/``, ``ImageSets/Main/{train,val}.txt``), COCO (``train.json`` and
``val.json`` at the top or under ``annotations/``), or YOLO (``train/`` and ``val/`` split folders with
``images/`` and ``labels/``, classes in ``classes.txt`` or ``data.yaml``). A ``classes.txt`` gives the class
order. A dataset that is not there is skipped with a note.

Writes ``OUT/suite.md`` (one table: per dataset and arm AP50, mAP, AP_small where the validation split
has small boxes, epochs done, training images/s, the epoch of the best validation, and, with a
``scratch`` arm, the minutes each other arm needed to reach scratch's final AP50), ``OUT/suite.json``,
``OUT/map50_vs_minutes.png`` (validation AP50 against wall minutes, a panel per dataset) and the run
directories ``OUT/<dataset>/<arm>/``. ``--reuse`` takes a finished run with the same settings instead of
training it again, so arms can run in separate calls and one last call writes the table over all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from detect_ft.checkpoint.training import load_checkpoint
from detect_ft.config.schema import load_config, safe_yaml
from detect_ft.engine.trainer import train
from detect_ft.utils.atomic_io import write_json_atomic, write_text_atomic
from detect_ft.utils.errors import DetectFTError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DEFAULT_DATASETS = ("raccoon-voc", "fruits", "coco128", "aquarium")
DEFAULT_ARMS = ("imagenet:model.weights=imagenet", "scratch:model.weights=none")


def parse_arm(text: str) -> tuple[str, list[str]]:
    """``"name:key=value,key=value"`` -> ``("name", ["key=value", ...])``."""
    name, _, settings = text.partition(":")
    if not name or "/" in name:
        raise DetectFTError(f"--arm {text!r}: give it as NAME:key=value,key=value (NAME a plain word)")
    return name, [s for s in settings.split(",") if s.strip()]


def dataset_overrides(folder: Path) -> list[str]:
    """The ``data.*`` overrides for a dataset folder in VOC, COCO or YOLO layout (see the module doc)."""
    classes = folder / "classes.txt"
    names = [line.strip() for line in classes.read_text().splitlines() if line.strip()] if classes.is_file() else []
    keys = [f"data.root={folder}", f"data.classes=[{','.join(names)}]"] if names else [f"data.root={folder}"]
    if (folder / "Annotations").is_dir() and (folder / "ImageSets" / "Main").is_dir():
        return [*keys, "data.format=voc", "data.train=train", "data.val=val"]
    for where in (folder, folder / "annotations"):
        if (where / "train.json").is_file() and (where / "val.json").is_file():
            rel = where.relative_to(folder)
            return [*keys, "data.format=coco", f"data.train={rel / 'train.json'}", f"data.val={rel / 'val.json'}"]
    if (folder / "train" / "images").is_dir() and (folder / "val" / "images").is_dir():
        return [*keys, "data.format=yolo", "data.train=train", "data.val=val"]
    raise DetectFTError(
        f"{folder}: not a VOC (Annotations/, ImageSets/Main/), COCO (train.json, val.json) or YOLO "
        "(train/images, val/images) dataset folder"
    )


def resolve_dataset(name: str) -> Optional[Path]:
    """A shared dataset's folder by name, or the folder at path ``name``; None when it is not there."""
    for candidate in (Path(name), SHARED / name):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_arm(run_dir: Path, settings: list[str], reuse: bool) -> dict[str, Any]:
    """Train one arm on one dataset (or take the finished run with the same ``settings``); its record."""
    record = run_dir / "arm.json"
    if reuse and record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("settings") == settings:
            return saved
    try:
        cfg = load_config(None, [*settings, f"output.dir={run_dir}", "output.overwrite=true"])
        train(cfg, progress=False)
    except DetectFTError as exc:
        return {"settings": settings, "error": str(exc)}
    result = summarise_run(run_dir)
    write_json_atomic(record, {"settings": settings, **result})
    return {"settings": settings, **result}


def summarise_run(run_dir: Path) -> dict[str, Any]:
    """Best validation AP50/mAP/AP_small (of best.pt), epochs, mean images/s, the validation curve."""
    rows = read_rows(run_dir)
    validated = [r for r in rows if r.get("map50") is not None]
    best_path = run_dir / "checkpoints" / "best.pt"
    metrics = load_checkpoint(best_path).get("metrics", {}) if best_path.is_file() else {}
    best = max(validated, key=lambda r: r["map50"], default={})
    speeds = [r["img_s"] for r in rows if r.get("img_s")]
    small = metrics.get("map_small")
    return {
        "map50": metrics.get("map50", best.get("map50")),
        "map": metrics.get("map", best.get("map")),
        "map_small": small if small is not None and small >= 0 else None,
        "epochs": len(rows),
        "img_s": sum(speeds) / len(speeds) if speeds else None,
        "best_epoch": best.get("epoch"),
        "minutes": rows[-1]["elapsed"] / 60 if rows and "elapsed" in rows[-1] else None,
        "curve": [(r["elapsed"] / 60, r["map50"]) for r in validated if "elapsed" in r],
    }


def minutes_to_reach(curve: list[tuple[float, float]], target: Optional[float]) -> Optional[float]:
    """The first minute at which a validation AP50 reached ``target`` (None: never, or no target)."""
    if target is None:
        return None
    return next((minute for minute, value in curve if value >= target), None)


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(results: dict[str, dict[str, dict[str, Any]]], minutes: float) -> str:
    """The markdown table: a row per dataset and arm."""
    lines = [
        f"Budget: {minutes:g} min of wall time per run (train.time_budget).",
        "",
        "| dataset | arm | AP50 | mAP | AP_small | epochs | img/s | best epoch | min to scratch's AP50 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dataset, arms in results.items():
        scratch = arms.get("scratch", {}).get("map50")
        for arm, res in arms.items():
            if "error" in res:
                lines.append(f"| {dataset} | {arm} | failed: {res['error'][:80]} | | | | | | |")
                continue
            reach = minutes_to_reach(res.get("curve", []), scratch) if arm != "scratch" else None
            cells = [res.get("map50"), res.get("map"), res.get("map_small"), res.get("epochs")]
            cells += [_cell(res.get("img_s"), 1), res.get("best_epoch"), _cell(reach, 1)]
            lines.append(f"| {dataset} | {arm} | " + " | ".join(_cell(c) for c in cells) + " |")
    means = _means(results)
    if means:
        lines += ["", "Mean AP50 over the datasets: " + ", ".join(f"{a} {v:.3f}" for a, v in means.items())]
    return "\n".join(lines) + "\n"


def _means(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    arms = {arm for res in results.values() for arm in res}
    means = {}
    for arm in sorted(arms):
        values = [res[arm].get("map50") for res in results.values() if arm in res and "error" not in res[arm]]
        if values and all(v is not None for v in values):
            means[arm] = sum(values) / len(values)
    return means


def plot_curves(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """Validation AP50 against wall minutes, one panel per dataset, one line per arm."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * max(len(results), 1), 3.2))
    axes = fig.subplots(1, max(len(results), 1), squeeze=False)[0]
    for ax, (dataset, arms) in zip(axes, results.items()):
        for arm, res in arms.items():
            if res.get("curve"):
                ax.plot(*zip(*res["curve"]), marker=".", label=arm)
        ax.set(title=dataset, xlabel="minutes", ylabel="val AP50", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=90, bbox_inches="tight")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    parser.add_argument("--arm", action="append", default=None, help="NAME:key=value,key=value (repeatable)")
    parser.add_argument("--config", default=None, help="a base config YAML (its data section is replaced)")
    parser.add_argument("--model", default="ssdlite320_efficientnet_lite0")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("runs/suite"))
    parser.add_argument("--reuse", action="store_true", help="take finished runs with the same settings")
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parser.parse_args(argv)
    try:
        arms = [parse_arm(text) for text in (args.arm or DEFAULT_ARMS)]
        results = run_suite(args, arms)
    except DetectFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table = format_table(results, args.minutes)
    write_text_atomic(args.out / "suite.md", table)
    write_json_atomic(args.out / "suite.json", {"minutes": args.minutes, "results": results})
    plot_curves(results, args.out / "map50_vs_minutes.png")
    print(table)
    return 0


def run_suite(args: argparse.Namespace, arms: list[tuple[str, list[str]]]) -> dict[str, dict[str, dict[str, Any]]]:
    base = _base_overrides(args)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in args.datasets:
        folder = resolve_dataset(name)
        if folder is None:
            print(f"skipped {name}: no such folder here or in {SHARED}", file=sys.stderr)
            continue
        data = dataset_overrides(folder)
        results[folder.name] = {}
        for arm, settings in arms:
            print(f"== {folder.name} / {arm}: {args.minutes:g} min", file=sys.stderr, flush=True)
            run_dir = args.out / folder.name / arm
            results[folder.name][arm] = run_arm(run_dir, [*base, *data, *settings], args.reuse)
    return results


def _base_overrides(args: argparse.Namespace) -> list[str]:
    """The settings every run shares: the keys the base config sets (not its data or output sections, and
    not the keys it leaves to the model's recipe), the model, the budget, the trailing overrides."""
    base: list[str] = []
    if args.config:
        sections = safe_yaml(Path(args.config).read_text()) or {}
        for section, values in sections.items():
            if section not in ("data", "output") and isinstance(values, dict):
                base += [f"{section}.{key}={json.dumps(value)}" for key, value in values.items()]
    return [*base, f"model.name={args.model}", f"train.time_budget={args.minutes * 60:g}s", *args.overrides]


if __name__ == "__main__":
    sys.exit(main())
