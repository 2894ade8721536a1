"""PNG plots of a split for ``detect-ft check-data --plots DIR``: histograms and annotated samples."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detect_ft.data.image import read_image
from detect_ft.data.records import DatasetRecords
from detect_ft.data.stats import split_stats
from detect_ft.errors import DataError
from detect_ft.io import atomic_path


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def write_split_plots(
    records: DatasetRecords, out_dir: str | os.PathLike, prefix: str, samples: int = 16
) -> list[Path]:
    """Write ``<prefix>_histograms.png`` (classes, box sizes, aspects, centres) and ``<prefix>_samples.png``.

    The samples are the first ``samples`` images with boxes drawn (labels named); unreadable images are
    skipped. Returns the paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    stats = split_stats(records)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
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
    written = [_save(fig, out_dir / f"{prefix}_histograms.png")]
    plt.close(fig)

    images = []
    for record in records.records[: samples * 2]:
        try:
            images.append((record, read_image(record.image_path, apply_orientation=record.apply_orientation)))
        except DataError:
            continue
        if len(images) == samples:
            break
    if images:
        cols = int(np.ceil(np.sqrt(len(images))))
        rows = int(np.ceil(len(images) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        colors = plt.get_cmap("tab10")
        for ax, (record, image) in zip(axes.flat, images):
            ax.imshow(image)
            for (x1, y1, x2, y2), label in zip(record.boxes.tolist(), record.labels.tolist()):
                color = colors((label - 1) % 10)
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, linewidth=1.5))
                ax.text(
                    x1,
                    y1,
                    records.class_names[label - 1],
                    color="white",
                    fontsize=7,
                    bbox={"facecolor": color, "pad": 1, "linewidth": 0},
                )
            ax.set_title(Path(record.image_path).name, fontsize=7)
        written.append(_save(fig, out_dir / f"{prefix}_samples.png"))
        plt.close(fig)
    return written
