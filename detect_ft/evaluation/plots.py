"""Evaluation plots: precision-recall curves per class and a confusion matrix with a background class.

Both are drawn on standalone matplotlib ``Figure`` objects (no pyplot state, no backend switch in the
calling process, no display needed), written as PNG atomically, and carry
the PNG text entry ``Software: detect-ft eval``, so that a later evaluation replaces its own plots but
never an unrelated file that happens to have the same name (:func:`foreign_plot_files`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detect_ft.data.records import DatasetRecords
from detect_ft.evaluation.prediction_checks import check_predictions, ground_truth_ignore
from detect_ft.evaluation.thresholds import THRESHOLD_PLOT_NAMES
from detect_ft.evaluation.voc_eval import average_precision, match_detections, precision_recall
from detect_ft.inference.predictions import filter_detections
from detect_ft.utils.atomic_io import atomic_path
from detect_ft.utils.boxes import box_iou
from detect_ft.utils.errors import DetectFTError

_LEGEND_MAX = 20  # beyond this many classes a legend hides the curves
PLOT_NAMES = ("pr_curves.png", "confusion_matrix.png", *THRESHOLD_PLOT_NAMES)
SOFTWARE = "detect-ft eval"  # the PNG "Software" text entry of every plot written here


def foreign_plot_files(out_dir: str | Path) -> list[Path]:
    """The files at the plot paths in ``out_dir`` that exist and were not written by :func:`write_plots`."""
    from PIL import Image

    foreign = []
    for name in PLOT_NAMES:
        path = Path(out_dir) / name
        if not path.exists():
            continue
        try:
            with Image.open(path) as image:
                ours = image.format == "PNG" and image.info.get("Software") == SOFTWARE
        except Exception:
            ours = False
        if not ours:
            foreign.append(path)
    return foreign


def confusion_matrix(
    dataset: DatasetRecords, predictions: list[dict], *, iou: float = 0.5, score_thresh: float = 0.25
) -> np.ndarray:
    """Detection confusion matrix, (K+1, K+1) int64.

    Rows are ground truth, columns predictions; index k-1 is class k and the last index is background.
    Per image, detections scoring >= ``score_thresh`` are paired one-to-one with ground-truth boxes of
    any class by descending IoU (pairs with IoU >= ``iou``): a pair adds to [gt class, predicted class],
    an unpaired ground-truth box to [gt class, background] (missed), an unpaired detection to
    [background, predicted class] (false alarm). Detections overlapping a difficult or crowd box by
    >= ``iou`` and left unpaired are not counted, as in the metrics.
    """
    preds = check_predictions(dataset, predictions)
    k = dataset.num_classes
    matrix = np.zeros((k + 1, k + 1), np.int64)
    for record, pred in zip(dataset.records, preds):
        kept = filter_detections(pred, score_thresh)
        det_boxes, det_labels = kept["boxes"], kept["labels"]
        ignore = ground_truth_ignore(record)
        gt_boxes, gt_labels = record.boxes[~ignore].astype(np.float64), record.labels[~ignore]
        gt_used = np.zeros(len(gt_boxes), bool)
        det_used = np.zeros(len(det_boxes), bool)
        if len(gt_boxes) and len(det_boxes):
            ious = box_iou(gt_boxes, det_boxes)
            gi, di = np.nonzero(ious >= iou)
            for g, d in sorted(zip(gi.tolist(), di.tolist()), key=lambda p: -ious[p]):
                if not gt_used[g] and not det_used[d]:
                    gt_used[g] = det_used[d] = True
                    matrix[gt_labels[g] - 1, det_labels[d] - 1] += 1
        for g in np.flatnonzero(~gt_used):
            matrix[gt_labels[g] - 1, k] += 1
        spare = np.flatnonzero(~det_used)
        if ignore.any() and len(spare):
            on_ignored = box_iou(det_boxes[spare], record.boxes[ignore].astype(np.float64)).max(1) >= iou
            spare = spare[~on_ignored]
        for d in spare:
            matrix[k, det_labels[d] - 1] += 1
    return matrix


def write_plots(
    dataset: DatasetRecords,
    predictions: list[dict],
    out_dir: str | Path,
    *,
    iou: float = 0.5,
    score_thresh: float = 0.25,
) -> list[Path]:
    """Write ``pr_curves.png`` (one VOC-matched precision-recall curve per class at IoU ``iou``, AP in
    the legend) and ``confusion_matrix.png`` (see :func:`confusion_matrix`) into ``out_dir``.

    Returns the paths written.
    """
    preds = check_predictions(dataset, predictions)
    out_dir = Path(out_dir)
    foreign = foreign_plot_files(out_dir)
    if foreign:
        raise DetectFTError(
            f"{', '.join(map(str, foreign))} exist and were not written by detect-ft's evaluation; "
            "they are not replaced: write the evaluation to another folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_plot_pr(dataset, preds, out_dir / PLOT_NAMES[0], iou)]
    matrix = confusion_matrix(dataset, preds, iou=iou, score_thresh=score_thresh)
    written.append(_plot_confusion(matrix, dataset.class_names, out_dir / PLOT_NAMES[1], iou, score_thresh))
    return written


def _plot_pr(dataset: DatasetRecords, preds: list[dict], path: Path, iou: float) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    aps = []
    labels, _, tp, npos = match_detections(dataset, preds, iou=iou)
    for label, name in enumerate(dataset.class_names, start=1):
        if npos[label] == 0:
            continue  # no curve exists without ground truth
        precision, recall = precision_recall(tp[labels == label], int(npos[label]))
        ap = average_precision(precision, recall)
        aps.append(ap)
        ax.plot(
            np.concatenate(([0.0], recall)), np.concatenate(([1.0], precision)), linewidth=1.2, label=f"{name} {ap:.3f}"
        )
    title = f"Precision-recall at IoU {iou:g}"
    if aps:
        title += f" (mAP {np.mean(aps):.3f})"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if 0 < len(aps) <= _LEGEND_MAX:
        ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


def _plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, iou: float, score_thresh: float) -> Path:
    from matplotlib.figure import Figure

    names = list(class_names) + ["background"]
    side = min(max(4.0, 0.45 * len(names) + 2), 30.0)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.subplots()
    # Row-normalised colours make rare classes readable; the cells print raw counts.
    totals = matrix.sum(1, keepdims=True)
    shade = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the row")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90 if len(names) > 6 else 0, fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set(
        xlabel="predicted", ylabel="ground truth", title=f"Confusion matrix (IoU >= {iou:g}, score >= {score_thresh:g})"
    )
    if len(names) <= 30:
        for (r, c), count in np.ndenumerate(matrix):
            if count:
                ax.text(
                    c,
                    r,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shade[r, c] > 0.5 else "black",
                )
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically, tagged as this evaluation's own (see :func:`foreign_plot_files`)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": SOFTWARE})
    return path


def write_threshold_plots(curves: dict, out_dir: str | Path) -> list[Path]:
    """``f1_curve.png``, ``precision_curve.png`` and ``recall_curve.png`` against confidence: the overall
    curve bold, each class thin (legend up to 20 classes), the overall F1-optimal point marked."""
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid, written = np.asarray(curves["conf"]), []
    for key, name in zip(("f1", "precision", "recall"), THRESHOLD_PLOT_NAMES):
        fig = Figure(figsize=(6, 4.5), dpi=100)
        ax = fig.add_subplot()
        for class_name, values in curves["per_class"].items():
            ax.plot(grid, values[key], linewidth=0.8, alpha=0.7, label=class_name)
        ax.plot(grid, curves["overall"][key], color="black", linewidth=2.2, label="all classes")
        best = curves.get("overall_threshold")
        if key == "f1" and best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1)
            ax.set_title(f"F1 {curves['overall_f1']:.3f} at confidence {best:.2f} (IoU {curves['iou']})")
        ax.set(xlabel="confidence threshold", ylabel=key, xlim=(0, 1), ylim=(0, 1.02))
        if len(curves["per_class"]) <= 20:
            ax.legend(fontsize=7, loc="lower left" if key != "precision" else "lower right")
        written.append(save_figure(fig, out_dir / name))
    return written
