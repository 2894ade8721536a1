"""Transfer-learning study: does starting from pretrained weights pay off on *your* data?

    python tools/transfer_study.py CONFIG --source imagenet|coco|CHECKPOINT [key=value ...] [--out runs/transfer]
                                   [--arms scratch frozen finetune gradual] [--backbone-lr-mult 0.1]

Trains ``model.name`` on the config's dataset once per arm, with the same budget (epochs, batch, optimiser,
schedule, seed, augmentation) and validation after every epoch:

- ``scratch``: random initialisation (``model.weights=none``), every layer trains;
- ``frozen``: the source weights, backbone body frozen for the whole run (FPN/extra layers and heads train);
- ``finetune``: the source weights, every layer trains, the backbone at ``--backbone-lr-mult`` x the LR;
- ``gradual``: the source weights, backbone frozen for the first third of the epochs, then every layer trains.

``--source`` is ``imagenet`` (the backbone's ImageNet weights: offline for the EfficientNet-Lite models),
``coco`` (torchvision's COCO weights, from the torch hub cache or downloaded) or any detect-ft checkpoint
of the same architecture trained on other classes (its head rows are matched by class name). Writes
``OUT/study.md`` (one table: best and final mAP and mAP50, epochs to reach 90% of the best mAP any arm
reached, epochs to reach the scratch arm's final mAP50, wall time), ``OUT/study.json``,
``OUT/map_per_epoch.png`` (mAP50 and mAP per epoch) and one run directory per arm (``OUT/<arm>/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from detect_ft.config.schema import load_config
from detect_ft.engine.trainer import train
from detect_ft.models import build_model, num_backbone_stages
from detect_ft.utils.atomic_io import atomic_path, write_json_atomic, write_text_atomic
from detect_ft.utils.errors import DetectFTError

ARMS = ("scratch", "frozen", "finetune", "gradual")


def arm_overrides(arm: str, source: str, epochs: int, all_stages: int, backbone_lr_mult: float = 1.0) -> list[str]:
    """The config overrides that make one arm; everything else is shared by all arms."""
    # The backbone LR multiplier is set in every arm, so that a model recipe's own value cannot differ
    # between them.
    full_lr = "train.backbone_lr_mult=1.0"
    if arm == "scratch":
        return ["model.weights=none", f"model.trainable_backbone_layers={all_stages}", full_lr]
    pretrained = [f"model.weights={source}", f"model.trainable_backbone_layers={all_stages}"]
    if arm == "frozen":
        return [f"model.weights={source}", "model.trainable_backbone_layers=0", full_lr]
    if arm == "finetune":
        return [*pretrained, f"train.backbone_lr_mult={backbone_lr_mult}"]
    if arm == "gradual":
        return [*pretrained, f"train.freeze_backbone_epochs={max(1, epochs // 3)}", full_lr]
    raise DetectFTError(f"--arms: unknown arm {arm!r}; allowed: {', '.join(ARMS)}")


def finished_arm(run_dir: Path, settings: list[str], epochs: int) -> dict[str, Any] | None:
    """A finished earlier run of this arm (same overrides, every epoch logged), so arms can run in separate
    processes (``--arms``) and one last call with ``--reuse`` writes the table over all of them."""
    record = run_dir / "arm.json"
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    if saved.get("settings") != settings or len(saved.get("rows", [])) != epochs:
        return None
    return saved


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: best and final mAP/mAP50, first epoch reaching 90% of the best mAP of all arms, first epoch
    reaching the scratch arm's final mAP50 (when there is a scratch arm), wall time."""
    overall = max((max((r.get("map") or 0.0) for r in res["rows"]) for res in results.values()), default=0.0)
    scratch_rows = [r for r in results.get("scratch", {}).get("rows", []) if r.get("map50") is not None]
    scratch_final = scratch_rows[-1]["map50"] if scratch_rows else None
    table = {}
    for arm, res in results.items():
        rows = [r for r in res["rows"] if r.get("map") is not None]
        reached = [r["epoch"] for r in rows if overall > 0 and r["map"] >= 0.9 * overall]
        caught_up = [r["epoch"] for r in rows if scratch_final is not None and r["map50"] >= scratch_final]
        table[arm] = {
            "best_map": max((r["map"] for r in rows), default=None),
            "best_map50": max((r["map50"] for r in rows), default=None),
            "final_map": rows[-1]["map"] if rows else None,
            "final_map50": rows[-1]["map50"] if rows else None,
            "epochs_to_90pct": reached[0] if reached else None,
            "epochs_to_scratch_final_map50": caught_up[0] if caught_up else None,
            "wall_s": res["wall_s"],
            "map_per_epoch": [r["map"] for r in rows],
            "map50_per_epoch": [r["map50"] for r in rows],
        }
    return table


def markdown(table: dict[str, dict[str, Any]], header: str) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    epochs = lambda v: "never" if v is None else str(v)
    lines = [
        header,
        "",
        "| arm | best mAP | final mAP | best mAP50 | final mAP50 | epochs to 90% of best mAP | "
        "epochs to scratch's final mAP50 | wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for arm, row in table.items():
        lines.append(
            f"| {arm} | {fmt(row['best_map'])} | {fmt(row['final_map'])} | {fmt(row['best_map50'])} | "
            f"{fmt(row['final_map50'])} | {epochs(row['epochs_to_90pct'])} | "
            f"{epochs(row['epochs_to_scratch_final_map50'])} | {row['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: dict[str, dict[str, Any]], path: Path) -> None:
    # A standalone Figure: no pyplot state and no backend switch in the calling process.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    panels = (("map50_per_epoch", "validation mAP50"), ("map_per_epoch", "validation mAP (0.50:0.95)"))
    for ax, (key, label) in zip(axes, panels):
        for arm, row in table.items():
            ax.plot(range(1, len(row[key]) + 1), row[key], marker="o", markersize=3, label=arm)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument(
        "--source", required=True, help="imagenet, coco, or a detect-ft checkpoint trained on other classes"
    )
    parser.add_argument(
        "--backbone-lr-mult", type=float, default=0.1, help="backbone LR multiplier of the finetune arm (default 0.1)"
    )
    parser.add_argument("--out", default="runs/transfer")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument(
        "--reuse", action="store_true", help="reuse arms this tool already finished in OUT with the same settings"
    )
    args = parser.parse_args(argv)
    try:
        base = load_config(args.config, args.overrides)
        out = Path(args.out)
        base_overrides = [*args.overrides, "train.eval_interval=1", "train.patience=0", "train.resume="]
        all_stages = num_backbone_stages(
            build_model(base.model.name, 1, weights="none", backbone=base.model.backbone or None), base.model.name
        )
        results = {}
        for arm in args.arms:
            arm_keys = arm_overrides(arm, args.source, base.train.epochs, all_stages, args.backbone_lr_mult)
            settings = [args.config, *args.overrides, *arm_keys]
            done = finished_arm(out / arm, settings, base.train.epochs) if args.reuse else None
            if done is not None:
                print(f"== arm {arm}: reusing {out / arm} ({len(done['rows'])} epochs)", flush=True)
                results[arm] = done
                continue
            overrides = [*base_overrides, *arm_keys, f"output.dir={out / arm}"]
            print(f"== arm {arm}: {' '.join(arm_keys)}", flush=True)
            start = time.perf_counter()
            run_dir = train(load_config(args.config, overrides), progress=False)
            results[arm] = {"rows": read_metrics(run_dir), "wall_s": time.perf_counter() - start, "settings": settings}
            write_json_atomic(out / arm / "arm.json", results[arm])
    except DetectFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = summarise(results)
    header = (
        f"Transfer study: {base.model.name} on {base.data.root or args.config}, source `{args.source}`, "
        f"{base.train.epochs} epochs per arm, {base.train.optimizer} lr {base.train.lr}, batch "
        f"{base.train.batch_size}; finetune arm backbone LR x{args.backbone_lr_mult}. 90% refers to the best mAP "
        f"of any arm."
    )
    write_text_atomic(out / "study.md", markdown(table, header))
    write_json_atomic(
        out / "study.json", {"source": args.source, "config": args.config, "overrides": args.overrides, "arms": table}
    )
    plot(table, out / "map_per_epoch.png")
    print(markdown(table, header))
    print(f"wrote {out / 'study.md'}, {out / 'study.json'}, {out / 'map_per_epoch.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
