"""A seeded generator of easy detection datasets: bright filled shapes on muted textured backgrounds.

    make_synthetic_dataset("data/synthetic", num_train=400, num_val=100, classes=("circle", "square", "triangle"))

Each image holds 1-4 shapes of 10%-50% of the short image side, overlapping little (at most 5% of the smaller box), in
saturated colours on a low-saturation noise, gradient or stripe background, so a small detector learns
them from scratch in minutes. Boxes are the exact pixel extent of each drawn shape (integer xyxy).
Every image draws from its own generator seeded by ``(seed, split, index)``: the same seed gives
byte-identical annotations, and changing ``num_train`` does not change the validation images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np

from detect_ft.data.convert import write_split
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.utils.atomic_io import atomic_path
from detect_ft.utils.boxes import box_ios
from detect_ft.utils.errors import DataError


def _polygon(n: int, start: float) -> Callable[[float, float, float], list[np.ndarray]]:
    def points(cx: float, cy: float, r: float) -> list[np.ndarray]:
        angles = start + 2 * np.pi * np.arange(n) / n
        return [np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)]

    return points


def _star(cx: float, cy: float, r: float) -> list[np.ndarray]:
    angles = -np.pi / 2 + np.pi * np.arange(10) / 5
    radii = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
    return [np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)]


def _cross(cx: float, cy: float, r: float) -> list[np.ndarray]:
    a = 0.33 * r  # half the bar thickness
    return [
        np.array([[cx - r, cy - a], [cx + r, cy - a], [cx + r, cy + a], [cx - r, cy + a]]),
        np.array([[cx - a, cy - r], [cx + a, cy - r], [cx + a, cy + r], [cx - a, cy + r]]),
    ]


def _square(cx: float, cy: float, r: float) -> list[np.ndarray]:
    s = 0.8 * r  # keeps the square's area close to the circle's
    return [np.array([[cx - s, cy - s], [cx + s, cy - s], [cx + s, cy + s], [cx - s, cy + s]])]


def _draw_polygons(make: Callable) -> Callable[[np.ndarray, float, float, float], None]:
    def draw(mask: np.ndarray, cx: float, cy: float, r: float) -> None:
        polys = [np.round(p).astype(np.int32) for p in make(cx, cy, r)]
        for poly in polys:
            cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_8)

    return draw


def _draw_circle(mask: np.ndarray, cx: float, cy: float, r: float) -> None:
    cv2.circle(mask, (round(cx), round(cy)), round(r), 255, -1, cv2.LINE_8)


def _draw_ring(mask: np.ndarray, cx: float, cy: float, r: float) -> None:
    cv2.circle(mask, (round(cx), round(cy)), round(r), 255, -1, cv2.LINE_8)
    cv2.circle(mask, (round(cx), round(cy)), round(0.55 * r), 0, -1, cv2.LINE_8)


def _draw_crescent(mask: np.ndarray, cx: float, cy: float, r: float) -> None:
    cv2.circle(mask, (round(cx), round(cy)), round(r), 255, -1, cv2.LINE_8)
    cv2.circle(mask, (round(cx + 0.5 * r), round(cy - 0.2 * r)), round(0.8 * r), 0, -1, cv2.LINE_8)


# The fixed vocabulary: name -> draw(mask, cx, cy, radius) filling the shape with 255.
SHAPES: dict[str, Callable[[np.ndarray, float, float, float], None]] = {
    "circle": _draw_circle,
    "square": _draw_polygons(_square),
    "triangle": _draw_polygons(_polygon(3, -np.pi / 2)),
    "star": _draw_polygons(_star),
    "cross": _draw_polygons(_cross),
    "ring": _draw_ring,
    "diamond": _draw_polygons(_polygon(4, -np.pi / 2)),
    "hexagon": _draw_polygons(_polygon(6, 0.0)),
    "pentagon": _draw_polygons(_polygon(5, -np.pi / 2)),
    "crescent": _draw_crescent,
}


def _hsv_color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    """An RGB uint8 colour with random hue and saturation/value drawn from the given ranges."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A muted (low saturation, mid value) noise, gradient or stripe texture, (H, W, 3) uint8 RGB."""
    a = _hsv_color(rng, (0.0, 0.3), (0.25, 0.65)).astype(np.float32)
    b = _hsv_color(rng, (0.0, 0.3), (0.25, 0.65)).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # blurred noise between the two colours
        noise = rng.random((max(height // 8, 2), max(width // 8, 2))).astype(np.float32)
        t = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        proj = xx * np.cos(angle) + yy * np.sin(angle)
        if kind == 1:  # linear gradient
            t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        else:  # stripes
            period = rng.uniform(8, 32)
            t = (np.sin(2 * np.pi * proj / period) > 0).astype(np.float32)
    image = a * (1 - t[..., None]) + b * t[..., None]
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8)


def synthetic_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    classes: Sequence[str],
    *,
    object_px: Optional[tuple[float, float]] = None,
    count: tuple[int, int] = (1, 4),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 RGB, its boxes (N, 4) float32 xyxy absolute pixels, labels (N,) 1..K.

    ``object_px``: the shapes' diameter range in pixels (default 10%-50% of the short side);
    ``count``: how many shapes to try to place (inclusive range).
    """
    image = _background(rng, width, height)
    side = min(width, height)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        for _attempt in range(30):
            if object_px is None:
                r = rng.uniform(0.05, 0.25) * side  # diameter 10%-50% of the short side
            else:
                r = rng.uniform(object_px[0] / 2, object_px[1] / 2)
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            label = int(rng.integers(len(classes))) + 1
            placed = _draw_shape(SHAPES[classes[label - 1]], width, height, cx, cy, r)
            if placed is None:
                continue
            box, window, mask = placed
            # IoS, not IoU: it also rejects a small shape hidden inside a big one
            if not boxes or box_ios(box, np.stack(boxes)).max() <= 0.05:
                image[window][mask > 0] = _hsv_color(rng, (0.75, 1.0), (0.8, 1.0))
                boxes.append(box)
                labels.append(label)
                break
    return image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _draw_shape(draw: Callable, width: int, height: int, cx: float, cy: float, r: float):
    """``(box, window, mask)`` of one shape drawn into a window around it (not a whole-image mask: large
    images with many small shapes stay fast), or None when nothing of it lands in the image.

    The window starts at even pixel offsets, so the half-to-even rounding of the drawing functions gives
    the same pixels as drawing into the whole image would.
    """
    margin = 0.5 * r + 4
    x0, y0 = max(0, int(cx - r - margin)), max(0, int(cy - r - margin))
    x0, y0 = x0 - x0 % 2, y0 - y0 % 2
    x1, y1 = min(width, int(cx + r + margin) + 1), min(height, int(cy + r + margin) + 1)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    draw(mask, cx - x0, cy - y0, r)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    box = np.array([xs.min() + x0, ys.min() + y0, xs.max() + 1 + x0, ys.max() + 1 + y0], np.float32)
    return box, (slice(y0, y1), slice(x0, x1)), mask


def _image_path(out_dir: Path, format: str, split: str, file_name: str) -> Path:
    folder = {"coco": out_dir / "images", "voc": out_dir / "JPEGImages", "yolo": out_dir / split / "images"}
    return folder[format] / file_name


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    num_train: int,
    num_val: int,
    image_size: Union[int, tuple[int, int]] = (320, 320),
    classes: Sequence[str] = ("circle", "square", "triangle"),
    format: str = "coco",
    seed: int = 0,
    object_px: Optional[tuple[float, float]] = None,
    objects: tuple[int, int] = (1, 4),
) -> Path:
    """Write a synthetic dataset and return ``out_dir``.

    Layouts: coco: ``train.json``, ``val.json``, ``images/``; voc: ``Annotations/``, ``JPEGImages/``,
    ``ImageSets/Main/{train,val}.txt``; yolo: ``{train,val}/{images,labels}/`` and ``data.yaml``.
    ``image_size`` is ``(width, height)`` or one int for square images; ``classes`` are names from
    :data:`SHAPES` (label k = classes[k-1]). ``object_px`` (diameter range in pixels, e.g. ``(12, 32)``
    for a small-object set) and ``objects`` (shapes per image) go to :func:`synthetic_image`.
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise DataError(f"synthetic classes {list(classes)}: use distinct names from {', '.join(SHAPES)}")
    if format not in ("coco", "voc", "yolo"):
        raise DataError(f"synthetic format '{format}': use coco, voc or yolo")
    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    if min(width, height) < 32 or num_train < 0 or num_val < 0:
        raise DataError("synthetic data needs images of at least 32x32 pixels and non-negative image counts")
    out_dir = Path(out_dir)
    for split_code, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        if count == 0:
            continue
        records = []
        for index in range(count):
            rng = np.random.default_rng([seed, split_code, index])
            image, boxes, labels = synthetic_image(rng, width, height, classes, object_px=object_px, count=objects)
            file_name = f"{split}_{index:06d}.jpg"
            path = _image_path(out_dir, format, split, file_name)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data.tobytes())
            records.append(
                ImageRecord(str(path), width, height, boxes, labels, image_id=index + 1, file_name=file_name)
            )
        write_split(DatasetRecords(records, list(classes), source=str(out_dir)), format, out_dir, split, "none")
    return out_dir
