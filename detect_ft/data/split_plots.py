"""PNG plots of a split for ``detect-ft check-data --plots DIR``: histograms and annotated samples."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detect_ft.data.image import read_image
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.data.stats import split_stats
from detect_ft.utils.atomic_io import atomic_path
from detect_ft.utils.errors import DataError


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def write_split_plots(
    records: DatasetRecords, out_dir: str | os.PathLike, prefix: str, samples: int = 16
) -> list[Path]:
    """Write ``<prefix>_histograms.png`` (classes, box sizes, aspects, centres) and ``<prefix>_samples.png``.

    The samples are the first ``samples`` images with boxes drawn (labels named); unreadable images are
    skipped. Returns the paths written. Figures are standalone (no pyplot state, no backend switch).
    """
    out_dir = Path(out_dir)
    written = [_save(_histogram_figure(records, prefix), out_dir / f"{prefix}_histograms.png")]
    images = _sample_images(records, samples)
    if images:
        written.append(_save(_samples_figure(records, images), out_dir / f"{prefix}_samples.png"))
    return written


def _histogram_figure(records: DatasetRecords, prefix: str):
    """Boxes per class, box sizes, aspect ratios and normalised centres of the split, on a 2x2 grid."""
    from matplotlib.figure import Figure

    stats = split_stats(records)
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    ax.bar(range(records.num_classes), stats.boxes_per_class)
    ax.set_xticks(range(records.num_classes), records.class_names, rotation=45, ha="right")
    ax.set_title("boxes per class")
    axes[0, 1].hist(stats.sizes, bins=40)
    axes[0, 1].set_title("box size sqrt(w*h) [px]")
    if len(stats.aspects):
        axes[1, 0].hist(np.log2(stats.aspects), bins=40)
    axes[1, 0].set_title("box aspect log2(w/h)")
    centres = [((r.boxes[:, :2] + r.boxes[:, 2:]) / 2) / [r.width, r.height] for r in records.records if r.num_boxes]
    if centres:
        c = np.concatenate(centres)
        axes[1, 1].hist2d(c[:, 0], c[:, 1], bins=20, range=[[0, 1], [0, 1]])
    axes[1, 1].invert_yaxis()
    axes[1, 1].set_title("box centres (normalised)")
    fig.suptitle(f"{prefix}: {stats.images} images, {stats.boxes} boxes")
    return fig


def _sample_images(records: DatasetRecords, samples: int) -> list[tuple[ImageRecord, np.ndarray]]:
    """Up to ``samples`` (record, RGB image) pairs from the first ``2 * samples`` records, skipping unreadable ones."""
    images = []
    for record in records.records[: samples * 2]:
        try:
            images.append((record, read_image(record.image_path, apply_orientation=record.apply_orientation)))
        except DataError:
            continue
        if len(images) == samples:
            break
    return images


def _samples_figure(records: DatasetRecords, images: list[tuple[ImageRecord, np.ndarray]]):
    """A grid of the images with their boxes (xyxy, absolute pixels) drawn and labelled by class name."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    fig = Figure(figsize=(3 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    colors = colormaps["tab10"]
    for ax, (record, image) in zip(axes.flat, images):
        ax.imshow(image)
        for (x1, y1, x2, y2), label in zip(record.boxes.tolist(), record.labels.tolist()):
            color = colors((label - 1) % 10)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, linewidth=1.5))
            bbox = {"facecolor": color, "pad": 1, "linewidth": 0}
            ax.text(x1, y1, records.class_names[label - 1], color="white", fontsize=7, bbox=bbox)
        ax.set_title(Path(record.image_path).name, fontsize=7)
    return fig
