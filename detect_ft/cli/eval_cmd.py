"""``detect-ft eval CONFIG --weights CHECKPOINT|MODEL.onnx``: score a detector on a split of the dataset.

Prints the overall and per-class table, writes the metrics JSON (default
``<output.dir>/eval_<split>/metrics.json``) and, with ``eval.plots``, the PR curves and confusion matrix
beside it; ``--predictions`` also writes the detections in COCO results format.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from detect_ft.cli.common import add_config_arguments, config_from_args

if TYPE_CHECKING:
    from detect_ft.config import Config
    from detect_ft.data.records import DatasetRecords

HELP = "evaluate a checkpoint or ONNX model on the validation split: COCO mAP, VOC AP50, per-class AP, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--weights", required=True, metavar="CHECKPOINT|MODEL.onnx",
                        help="a detect-ft checkpoint (runs/<exp>/checkpoints/best.pt) or a model from detect-ft export")  # fmt: skip
    parser.add_argument("--split", choices=("val", "train"), default="val", help="which data split to score")
    parser.add_argument("--json", metavar="OUT", default="",
                        help="metrics JSON path (default <output.dir>/eval_<split>/metrics.json); plots go beside it")  # fmt: skip
    parser.add_argument("--predictions", metavar="OUT.json", default="",
                        help="also write the detections as a COCO results JSON (original category ids)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from detect_ft.errors import ConfigError, DetectFTError
    from detect_ft.evaluation.coco_eval import write_coco_results
    from detect_ft.evaluation.evaluator import filter_predictions, load_predictor, predict_records, score_predictions
    from detect_ft.evaluation.report import format_metrics
    from detect_ft.io import write_json_atomic

    cfg = config_from_args(args)
    split = getattr(cfg.data, args.split)
    if not split:
        raise ConfigError(f"{args.config}: config key 'data.{args.split}' is empty; set it to the split to evaluate")
    json_path = Path(args.json) if args.json else Path(cfg.output.dir) / f"eval_{args.split}" / "metrics.json"
    if cfg.eval.plots:
        from detect_ft.evaluation.plots import foreign_plot_files

        foreign = foreign_plot_files(json_path.parent)
        if foreign:  # checked before the (long) prediction, and never replaced
            raise DetectFTError(f"the plots go beside --json {json_path}, where {', '.join(map(str, foreign))} exist "
                                "and were not written by detect-ft eval; pass --json into a folder of its own, or "
                                "set eval.plots=false")  # fmt: skip
    predict_batch, meta = load_predictor(args.weights, cfg.train.device)
    # The model's class order defines the labels; an old checkpoint without names falls back to the config.
    dataset = load_eval_split(cfg, split, meta.get("class_names") or list(cfg.data.classes))

    start = time.perf_counter()
    raw = predict_records(predict_batch, dataset, batch_size=cfg.eval.batch_size, workers=cfg.train.workers)
    seconds = time.perf_counter() - start
    preds = filter_predictions(raw, cfg.eval.score_thresh)
    metrics = score_predictions(dataset, preds, backend=cfg.eval.backend, source=str(args.weights))
    metrics.update(
        images_per_s=len(dataset) / seconds if seconds > 0 else None,
        score_thresh=cfg.eval.score_thresh,
        weights=str(args.weights),
        model_name=meta.get("model_name"),
        split=args.split,
        dataset=dataset.source,
    )
    print(format_metrics(metrics))

    write_json_atomic(json_path, metrics)
    print(f"\nwrote {json_path}")
    if cfg.eval.plots:
        from detect_ft.evaluation.plots import write_plots

        for path in write_plots(dataset, preds, json_path.parent):
            print(f"wrote {path}")
    if args.predictions:
        write_coco_results(args.predictions, dataset, preds)
        print(f"wrote {args.predictions}")
    return 0


def load_eval_split(cfg: Config, split: str, class_names: list[str]) -> DatasetRecords:
    """The split's records, checked by the doctor with the config's ``data.on_*`` policies, labelled in
    the model's class order (label k = class_names[k-1]) so predictions and ground truth agree."""
    from detect_ft.data.split import SplitSpec, load_checked_split

    # decode=True: unreadable images are found (and handled by data.on_unreadable_image) before scoring,
    # so a dropped image leaves the ground truth too instead of counting as missed boxes
    dataset, _ = load_checked_split(SplitSpec.from_config(cfg.data), split, class_names, decode=True)
    return dataset
