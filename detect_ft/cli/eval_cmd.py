"""``detect-ft eval CONFIG --weights CHECKPOINT|MODEL.onnx``: score a detector on a split of the dataset.

Prints the overall and per-class table (with each class's F1-optimal confidence), writes the metrics
JSON (default ``<output.dir>/eval_<split>/metrics.json``), ``thresholds.json`` (precision, recall and F1
against confidence, overall and per class) and, with ``eval.plots``, the PR curves, confusion matrix and
P/R/F1 curves beside it; ``--predictions`` also writes the detections in COCO results format.
``eval.slice=512`` (and the other ``eval.slice_*`` keys) scores sliced inference (:mod:`detect_ft.inference.slicing`).
A thin wrapper over :meth:`detect_ft.api.Detector.evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detect_ft.cli.common import add_config_arguments, config_from_args

HELP = "evaluate a checkpoint or ONNX model on the validation split: COCO mAP, VOC AP50, per-class AP, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--weights",
        required=True,
        metavar="CHECKPOINT|MODEL.onnx",
        help="a detect-ft checkpoint (runs/<exp>/checkpoints/best.pt) or a model from detect-ft export",
    )
    parser.add_argument("--split", choices=("val", "train"), default="val", help="which data split to score")
    parser.add_argument(
        "--json",
        metavar="OUT",
        default="",
        help="metrics JSON path (default <output.dir>/eval_<split>/metrics.json); plots go beside it",
    )
    parser.add_argument(
        "--predictions",
        metavar="OUT.json",
        default="",
        help="also write the detections as a COCO results JSON (original category ids)",
    )


def run(args: argparse.Namespace) -> int:
    from detect_ft.api import Detector
    from detect_ft.api.evaluate import eval_slicing, refuse_foreign_plots
    from detect_ft.evaluation.report import format_metrics
    from detect_ft.utils.errors import ConfigError

    cfg = config_from_args(args)
    if not getattr(cfg.data, args.split):
        raise ConfigError(f"{args.config}: config key 'data.{args.split}' is empty; set it to the split to evaluate")
    json_path = Path(args.json) if args.json else Path(cfg.output.dir) / f"eval_{args.split}" / "metrics.json"
    if cfg.eval.plots:  # before the model loads, as well as in evaluate()
        refuse_foreign_plots(json_path.parent, fix=f"pass --json into a folder of its own (it is {json_path})")
    slicing = eval_slicing(cfg)
    if slicing is not None:
        print(slicing.describe())
    detector = Detector.load(args.weights, device=cfg.train.device)
    metrics = detector.evaluate(
        cfg, split=args.split, json_path=json_path, predictions=args.predictions or None, progress=True
    )
    print(format_metrics(metrics))
    print()
    for path in metrics["files"]:
        print(f"wrote {path}")
    return 0
