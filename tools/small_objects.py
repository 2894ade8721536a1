"""Small objects in large images: AP and AP_small with and without sliced inference, with and without
anchors fitted to the data, same model and budget (the #14 benchmark in docs/benchmarks.md).

    python tools/small_objects.py --out runs/small_objects [--epochs 20] [--raccoon ../shared/datasets/raccoon-voc]

Datasets:
- ``small``: generated (detect_ft.data.synthetic): 1600x1200 images, 10-30 shapes of 12-32 px each;
- ``raccoon``: the real raccoon photos (optional; skipped when the folder is absent).

Each dataset trains ``ssdlite320_efficientnet_lite0`` from its ImageNet weights twice: ``model.anchors`` default
and ``auto``. On the small set ``augment.crop_size`` is the slice size (training sees objects at the scale
sliced inference does) and validation during training is sliced (``eval.slice``), so best.pt is picked by
the protocol the set is meant for; on whole 1600x1200 images the shapes are 2-6 px at the model's input. Each checkpoint is then evaluated twice on the validation split: the whole
image at the model's input size, and ``eval.slice`` tiles (plus the whole image). Prints a markdown table and
writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from detect_ft.api import Detector
from detect_ft.api.train import train_config
from detect_ft.config.schema import load_config
from detect_ft.data.synthetic import make_synthetic_dataset
from detect_ft.evaluation.report import markdown_table

SHAPES = ("circle", "square", "triangle")


def small_object_set(root: Path, num_train: int, num_val: int) -> Path:
    if not (root / "val.json").exists():
        make_synthetic_dataset(
            root,
            num_train=num_train,
            num_val=num_val,
            image_size=(1600, 1200),
            classes=SHAPES,
            format="coco",
            seed=14,
            object_px=(12, 32),
            objects=(10, 30),
        )
    return root


def dataset_overrides(name: str, root: Path, slice_size: int) -> list[str]:
    if name == "small":
        return [
            "data.format=coco",
            f"data.root={root}",
            "data.train=train.json",
            "data.val=val.json",
            f"data.classes={json.dumps(list(SHAPES))}",
            f"augment.crop_size={slice_size}",
            f"model.min_size={slice_size}",
            f"eval.slice={slice_size}",
        ]
    return ["data.format=voc", f"data.root={root}", "data.train=train", "data.val=val", "data.classes=[raccoon]"]


def run_arm(
    out: Path, name: str, common: list[str], anchors: str, slice_size: int, overlap: float, device: str
) -> list[dict]:
    """Train one arm, then score its best checkpoint without and with slicing."""
    run_dir = out / f"{name}_{anchors}"
    cfg = load_config(None, [*common, f"model.anchors={anchors}", f"output.dir={run_dir}", "output.overwrite=true"])
    start = time.perf_counter()
    run = train_config(cfg, progress=False)
    train_s = time.perf_counter() - start
    detector = Detector.load(run.best_checkpoint, device=device)
    rows = []
    for sliced in (False, True):
        keys = {"eval.slice": slice_size if sliced else 0, "eval.slice_overlap": overlap}
        metrics = detector.evaluate(run_dir / "config.yaml", **keys)
        rows.append(
            {
                "dataset": name,
                "anchors": anchors,
                "slicing": f"{slice_size} px tiles" if sliced else "off",
                "map": metrics["map"],
                "map50": metrics["map50"],
                "map_small": metrics["map_small"],
                "train_s": round(train_s),
                "epochs": cfg.train.epochs,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/small_objects"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--slice", type=int, default=320, help="slice size (training crops and inference tiles)")
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=12)
    parser.add_argument("--workers", type=int, default=1, help="data loader processes (train.workers)")
    parser.add_argument("--eval-interval", type=int, default=4, help="validate every N epochs (train.eval_interval)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (training and scoring)")
    parser.add_argument("--raccoon", type=Path, default=Path("../shared/datasets/raccoon-voc"))
    parser.add_argument("--datasets", nargs="+", default=["small", "raccoon"], choices=["small", "raccoon"])
    args = parser.parse_args()
    budget = [
        "model.name=ssdlite320_efficientnet_lite0",
        f"train.epochs={args.epochs}",
        f"train.workers={args.workers}",
        "train.best_metric=map50",
        f"train.eval_interval={args.eval_interval}",
        "eval.batch_size=4",
        f"train.device={args.device}",
    ]
    rows = []
    for name in args.datasets:
        if name == "raccoon" and not (args.raccoon / "ImageSets").exists():
            print(f"skipping raccoon: {args.raccoon} not found")
            continue
        root = small_object_set(args.out / "data", args.num_train, args.num_val) if name == "small" else args.raccoon
        common = [*budget, *dataset_overrides(name, root.resolve(), args.slice)]
        for anchors in ("default", "auto"):
            rows += run_arm(args.out, name, common, anchors, args.slice, args.overlap, args.device)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    table = [
        (
            r["dataset"],
            r["anchors"],
            r["slicing"],
            fmt(r["map_small"]),
            fmt(r["map"]),
            fmt(r["map50"]),
            f"{r['epochs']} ep, {r['train_s']} s",
        )
        for r in rows
    ]
    print(markdown_table(("dataset", "anchors", "slicing", "AP_small", "AP", "AP50", "training"), table))


if __name__ == "__main__":
    main()
