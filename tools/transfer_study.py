"""Transfer-learning study: does starting from pretrained weights pay off on *your* data?

    python tools/transfer_study.py CONFIG --source coco|CHECKPOINT [key=value ...] [--out runs/transfer]
                                   [--arms scratch frozen finetune gradual]

Trains ``model.name`` on the config's dataset once per arm, with the same budget (epochs, batch, optimiser,
schedule, seed, augmentation) and validation after every epoch:

- ``scratch``: random initialisation (``model.weights=none``);
- ``frozen``: the source weights, backbone body frozen for the whole run (FPN/extra layers and heads train);
- ``finetune``: the source weights, every layer trains;
- ``gradual``: the source weights, backbone frozen for the first third of the epochs, then every layer trains.

``--source`` is ``coco`` (torchvision's COCO weights, from the torch hub cache or downloaded) or any
detect-ft checkpoint of the same architecture trained on other classes (its head rows are matched by
class name). Writes ``OUT/study.md`` (one table: best mAP, best mAP50, epochs to reach 90% of the best
mAP any arm reached, wall time), ``OUT/study.json``, ``OUT/map_per_epoch.png`` and one run directory per
arm (``OUT/<arm>/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from detect_ft.config import load_config
from detect_ft.engine.trainer import train
from detect_ft.errors import DetectFTError
from detect_ft.io import atomic_path, write_json_atomic, write_text_atomic
from detect_ft.models import build_model, num_backbone_stages

ARMS = ("scratch", "frozen", "finetune", "gradual")


def arm_overrides(arm: str, source: str, epochs: int, all_stages: int) -> list[str]:
    """The config overrides that make one arm; everything else is shared by all arms."""
    if arm == "scratch":
        return ["model.weights=none", f"model.trainable_backbone_layers={all_stages}"]
    pretrained = [f"model.weights={source}", f"model.trainable_backbone_layers={all_stages}"]
    if arm == "frozen":
        return [f"model.weights={source}", "model.trainable_backbone_layers=0"]
    if arm == "finetune":
        return pretrained
    if arm == "gradual":
        return [*pretrained, f"train.freeze_backbone_epochs={max(1, epochs // 3)}"]
    raise DetectFTError(f"--arms: unknown arm {arm!r}; allowed: {', '.join(ARMS)}")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: best mAP/mAP50, first epoch reaching 90% of the best mAP of all arms, wall time."""
    overall = max((max((r.get("map") or 0.0) for r in res["rows"]) for res in results.values()), default=0.0)
    table = {}
    for arm, res in results.items():
        rows = [r for r in res["rows"] if r.get("map") is not None]
        reached = [r["epoch"] for r in rows if overall > 0 and r["map"] >= 0.9 * overall]
        table[arm] = {
            "best_map": max((r["map"] for r in rows), default=None),
            "best_map50": max((r["map50"] for r in rows), default=None),
            "epochs_to_90pct": reached[0] if reached else None,
            "wall_s": res["wall_s"],
            "map_per_epoch": [r["map"] for r in rows],
        }
    return table


def markdown(table: dict[str, dict[str, Any]], header: str) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    lines = [header, "", "| arm | best mAP | best mAP50 | epochs to 90% of best mAP | wall time (s) |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for arm, row in table.items():
        reached = "never" if row["epochs_to_90pct"] is None else str(row["epochs_to_90pct"])
        lines.append(f"| {arm} | {fmt(row['best_map'])} | {fmt(row['best_map50'])} | {reached} | {row['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(table: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, row in table.items():
        ax.plot(range(1, len(row["map_per_epoch"]) + 1), row["map_per_epoch"], marker="o", label=arm)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mAP (0.50:0.95)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--source", required=True, help="coco, or a detect-ft checkpoint trained on other classes")
    parser.add_argument("--out", default="runs/transfer")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    args = parser.parse_args(argv)
    try:
        base = load_config(args.config, args.overrides)
        out = Path(args.out)
        base_overrides = [*args.overrides, "train.eval_interval=1", "train.patience=0", "train.resume="]
        all_stages = num_backbone_stages(build_model(base.model.name, 1, weights="none"), base.model.name)
        results = {}
        for arm in args.arms:
            overrides = [*base_overrides, *arm_overrides(arm, args.source, base.train.epochs, all_stages),
                         f"output.dir={out / arm}"]  # fmt: skip
            print(f"== arm {arm}: {' '.join(arm_overrides(arm, args.source, base.train.epochs, all_stages))}", flush=True)
            start = time.perf_counter()
            run_dir = train(load_config(args.config, overrides), progress=False)
            results[arm] = {"rows": read_metrics(run_dir), "wall_s": time.perf_counter() - start}
    except DetectFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = summarise(results)
    header = (f"Transfer study: {base.model.name} on {base.data.root or args.config}, source `{args.source}`, "
              f"{base.train.epochs} epochs per arm, {base.train.optimizer} lr {base.train.lr}, batch "
              f"{base.train.batch_size}. 90% refers to the best mAP of any arm.")  # fmt: skip
    write_text_atomic(out / "study.md", markdown(table, header))
    write_json_atomic(out / "study.json", {"source": args.source, "config": args.config, "overrides": args.overrides,
                                           "arms": table})  # fmt: skip
    plot(table, out / "map_per_epoch.png")
    print(markdown(table, header))
    print(f"wrote {out / 'study.md'}, {out / 'study.json'}, {out / 'map_per_epoch.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
