"""Split statistics for ``detect-ft check-data``: counts, class histogram, box size and aspect tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detect_ft.data.records import DatasetRecords

# sqrt(box area) in pixels; COCO's small/medium/large split at 32 and 96
SIZE_EDGES = (0, 16, 32, 64, 96, 128, 256, 512, np.inf)
# width / height
ASPECT_EDGES = (0, 0.25, 0.5, 0.8, 1.25, 2, 4, np.inf)


@dataclass
class SplitStats:
    images: int
    boxes: int
    background_images: int
    crowd_boxes: int
    difficult_boxes: int
    boxes_per_class: list[int]
    images_per_class: list[int]
    sizes: np.ndarray  # (M,) sqrt(area) of the non-crowd, non-degenerate boxes, pixels
    aspects: np.ndarray  # (M,) width / height of the same boxes
    image_sizes: np.ndarray  # (images, 2) width, height


def split_stats(records: DatasetRecords) -> SplitStats:
    """Counts and box geometry of a split (boxes xyxy, absolute pixels)."""
    k = records.num_classes
    boxes_per_class = np.zeros(k, np.int64)
    images_per_class = np.zeros(k, np.int64)
    sizes, aspects = [], []
    background = crowd = difficult = 0
    for record in records.records:
        background += record.num_boxes == 0
        crowd += int(record.iscrowd.sum())
        difficult += int(record.difficult.sum())
        labels = record.labels[(record.labels >= 1) & (record.labels <= k)]
        np.add.at(boxes_per_class, labels - 1, 1)
        images_per_class[np.unique(labels) - 1] += 1
        b = record.boxes[~record.iscrowd].astype(np.float64)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        ok = np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0)
        sizes.append(np.sqrt(w[ok] * h[ok]))
        aspects.append(w[ok] / h[ok])
    return SplitStats(
        images=len(records),
        boxes=records.num_boxes,
        background_images=int(background),
        crowd_boxes=crowd,
        difficult_boxes=difficult,
        boxes_per_class=boxes_per_class.tolist(),
        images_per_class=images_per_class.tolist(),
        sizes=np.concatenate(sizes) if sizes else np.zeros(0),
        aspects=np.concatenate(aspects) if aspects else np.zeros(0),
        image_sizes=np.array([[r.width, r.height] for r in records.records], np.int64).reshape(-1, 2),
    )


def _histogram_rows(values: np.ndarray, edges: tuple, fmt: str) -> list[tuple[str, int, str]]:
    counts, _ = np.histogram(values, bins=np.array(edges, np.float64))
    total = max(int(counts.sum()), 1)
    rows = []
    for lo, hi, n in zip(edges[:-1], edges[1:], counts):
        label = f">= {lo:{fmt}}" if np.isinf(hi) else f"{lo:{fmt}} - {hi:{fmt}}"
        rows.append((label, int(n), f"{100 * n / total:5.1f}%  " + "#" * round(30 * n / total)))
    return rows


def format_stats(stats: SplitStats, class_names: list[str]) -> str:
    """A plain-text report of :func:`split_stats` (several aligned tables)."""
    lines = [
        f"images {stats.images}   boxes {stats.boxes}   background images {stats.background_images}   "
        f"crowd boxes {stats.crowd_boxes}   difficult boxes {stats.difficult_boxes}"
    ]
    if len(stats.image_sizes):
        w, h = stats.image_sizes[:, 0], stats.image_sizes[:, 1]
        lines.append(
            f"image size  width {w.min()}..{w.max()} (median {int(np.median(w))})   "
            f"height {h.min()}..{h.max()} (median {int(np.median(h))})"
        )
    width = max([len(n) for n in class_names] + [5])
    lines += ["", f"{'class':<{width}}  {'boxes':>7}  {'images':>7}"]
    for name, boxes, images in zip(class_names, stats.boxes_per_class, stats.images_per_class):
        lines.append(f"{name:<{width}}  {boxes:>7}  {images:>7}" + ("   <- no boxes" if boxes == 0 else ""))
    for title, values, edges, fmt in (
        ("box size sqrt(w*h) px", stats.sizes, SIZE_EDGES, ".0f"),
        ("box aspect w/h", stats.aspects, ASPECT_EDGES, ".3g"),
    ):
        lines += ["", f"{title:<22}  {'boxes':>7}"]
        lines += [f"{label:<22}  {n:>7}  {bar}".rstrip() for label, n, bar in _histogram_rows(values, edges, fmt)]
    return "\n".join(lines)
