"""Evaluation as ``Detector.evaluate`` and ``detect-ft eval`` run it: the config's split, scored, written.

This is an entry point: it reads the :class:`~detect_ft.config.schema.Config` and hands plain values to the
evaluation library.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from detect_ft.config.schema import Config
from detect_ft.inference.predictions import PredictBatch
from detect_ft.inference.slicing import SliceOptions, slice_options
from detect_ft.utils.errors import ConfigError, DetectFTError

THRESHOLDS_FILE = "thresholds.json"


def evaluate_config(
    predict_batch: PredictBatch,
    cfg: Config,
    *,
    class_names: list[str],
    split: str = "val",
    source: str,
    model_name: Optional[str] = None,
    json_path: Optional[Path] = None,
    predictions_path: Optional[Path] = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``predict_batch`` on the config's ``split`` (``val`` or ``train``), labelled in ``class_names``.

    With ``json_path``: the metrics there, and beside it ``thresholds.json`` (P/R/F1 against confidence)
    and, with ``eval.plots``, the PR curves, confusion matrix and threshold plots; with
    ``predictions_path`` the detections as COCO results. Returns the metrics (``files``: what was written).
    """
    from detect_ft.data.split import SplitSpec, load_checked_split
    from detect_ft.evaluation.evaluator import predict_records, score_predictions
    from detect_ft.inference.predictions import filter_predictions

    split_path = getattr(cfg.data, split, None) if split in ("val", "train") else None
    if not split_path:
        raise ConfigError(f"config key 'data.{split}' is empty; set it to the split to evaluate")
    if json_path is not None and cfg.eval.plots:
        refuse_foreign_plots(json_path.parent)
    # decode=True: unreadable images are found (and handled by data.on_unreadable_image) before scoring,
    # so a dropped image leaves the ground truth too instead of counting as missed boxes
    dataset, _ = load_checked_split(SplitSpec.from_config(cfg.data), split_path, class_names, decode=True)
    slicing = eval_slicing(cfg)
    if slicing is not None:
        predict_batch = slicing.wrap(predict_batch)
    start = time.perf_counter()
    raw = predict_records(
        predict_batch, dataset, batch_size=cfg.eval.batch_size, workers=cfg.train.workers, progress=progress
    )
    seconds = time.perf_counter() - start
    preds = filter_predictions(raw, cfg.eval.score_thresh)
    metrics = score_predictions(dataset, preds, backend=cfg.eval.backend, source=source)
    curves = metrics.pop("threshold_curves")
    metrics.update(
        images_per_s=len(dataset) / seconds if seconds > 0 else None,
        score_thresh=cfg.eval.score_thresh,
        weights=source,
        model_name=model_name,
        split=split,
        dataset=dataset.source,
    )
    if slicing is not None:
        metrics["slicing"] = slicing.describe()
    files = _write_outputs(metrics, curves, dataset, preds, json_path, predictions_path, plots=cfg.eval.plots)
    metrics["files"] = [str(f) for f in files]
    return metrics


def eval_slicing(cfg: Config) -> Optional[SliceOptions]:
    """The sliced inference the ``eval.slice*`` keys ask for, or None (``eval.slice: 0``, the default)."""
    return slice_options(cfg.eval)


def refuse_foreign_plots(save_dir: Path, fix: str = "write the evaluation to a folder of its own") -> None:
    """Raise :class:`DetectFTError` when ``save_dir`` holds files at the plot paths that detect-ft did not
    write (they are never replaced); callers check before the long prediction. ``fix``: the way out the
    message offers besides ``eval.plots=false``."""
    from detect_ft.evaluation.plots import foreign_plot_files

    foreign = foreign_plot_files(save_dir)
    if foreign:  # checked before the (long) prediction, and never replaced
        raise DetectFTError(
            f"the evaluation plots go to {save_dir}, where {', '.join(map(str, foreign))} exist and "
            f"were not written by detect-ft eval; {fix}, or set eval.plots=false"
        )


def _write_outputs(
    metrics: dict,
    curves: dict,
    dataset,
    preds: list[dict],
    json_path: Optional[Path],
    predictions_path: Optional[Path],
    *,
    plots: bool,
) -> list[Path]:
    """The metrics, thresholds and plots beside ``json_path`` and the COCO results at ``predictions_path``
    (each only where given); the paths written."""
    from detect_ft.evaluation.coco_eval import write_coco_results
    from detect_ft.evaluation.plots import write_plots, write_threshold_plots
    from detect_ft.utils.atomic_io import write_json_atomic

    files: list[Path] = []
    if json_path is not None:
        save_dir = json_path.parent
        write_json_atomic(json_path, metrics)
        write_json_atomic(save_dir / THRESHOLDS_FILE, curves)
        files += [json_path, save_dir / THRESHOLDS_FILE]
        if plots:
            files += write_plots(dataset, preds, save_dir)
            files += write_threshold_plots(curves, save_dir)
    if predictions_path is not None:
        write_coco_results(predictions_path, dataset, preds)
        files.append(Path(predictions_path))
    return files
