"""Sliced inference for small objects in large images: run a detector on overlapping tiles (and the whole
image), shift the tiles' boxes back into the image and merge the duplicates.

A detector resizes its input to a fixed scale (e.g. 320 or 800 pixels), so an object of 20 pixels in a
4000-pixel photo shrinks to 2 and is missed. On a 512-pixel tile the same object keeps ten times as many
pixels. :func:`sliced` wraps any :data:`~detect_ft.inference.predictions.PredictBatch` (PyTorch or ONNX alike), so
prediction and evaluation run sliced without other changes.

Boxes are float xyxy in absolute pixels; windows are int xyxy (x2, y2 exclusive, as numpy slices).
Merging is class-wise, either by

* ``nms``: non-maximum suppression; a box is dropped when its IoU with a higher-scored kept box of its
  class exceeds ``merge_iou``;
* ``greedy``: greedy matching and merging (the GREEDYNMM of SAHI): the highest-scored remaining box
  absorbs every remaining box of its class whose IoS (intersection over the smaller box's area) with it
  is at least ``merge_iou``; the merged box is their union, its score their maximum. IoS, not IoU: an
  object cut by a tile border gives a partial box lying inside the whole one, whose IoU can be small.

Torch-free by contract (numpy only), like :mod:`detect_ft.inference.predictions`: the edge runtime uses it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from detect_ft.data.image_header import check_pixels
from detect_ft.inference.predictions import PredictBatch, as_detections
from detect_ft.utils.boxes import box_ios, box_iou
from detect_ft.utils.errors import ConfigError, DetectFTError

MERGES = ("nms", "greedy")
TILE_BATCH = 8  # tiles per predict_batch call: a 4000x3000 photo makes ~80 tiles of 512, too many at once
# Bounds that keep a tiling finite and useful: below 64 pixels a tile holds too little context for any
# detector; at an overlap of 0.9 each pixel is already run ~100 times; the tile bound is checked from the
# image size before planning (512-pixel tiles at 0.2 make ~1100 on the largest image the pixel limit allows).
MIN_TILE_SIDE = 64
MAX_OVERLAP = 0.9
MAX_TILES_PER_IMAGE = 4096


@dataclass(frozen=True)
class SliceOptions:
    """How to slice: square tiles of ``size`` pixels overlapping by the fraction ``overlap`` of a tile,
    merged by ``merge`` (``nms`` | ``greedy``) at ``merge_iou``, with a pass on the whole image when
    ``full_image`` (large objects that no tile holds whole are found there)."""

    size: int
    overlap: float = 0.2
    merge: str = "nms"
    full_image: bool = True
    merge_iou: float = 0.5

    def __post_init__(self) -> None:
        check_tiling(self.size, self.overlap)
        if self.merge not in MERGES:
            raise ConfigError(f"slice merge {self.merge!r} is not a merge method; choose one of {', '.join(MERGES)}")
        iou = self.merge_iou
        if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 < iou <= 1:
            raise ConfigError(f"slice merge IoU {self.merge_iou!r}: pass an overlap threshold in (0, 1], e.g. 0.5")

    def wrap(self, predict_batch: PredictBatch) -> PredictBatch:
        """:func:`sliced` ``predict_batch`` with these options."""
        return sliced(predict_batch, **dataclasses.asdict(self))

    def describe(self) -> str:
        """One line saying what is run and how it is merged (the predict command prints it)."""
        how = "class-wise NMS (IoU" if self.merge == "nms" else "greedy class-wise merging (IoS"
        whole = " plus the whole image" if self.full_image else ""
        return (
            f"sliced inference: {self.size}x{self.size} tiles overlapping by {self.overlap:g}{whole}, "
            f"merged by {how} {self.merge_iou:g})"
        )


def slice_options(eval_config: Any) -> "SliceOptions | None":
    """The sliced inference an ``EvalConfig``'s ``slice*`` keys ask for (read by attribute), or None when
    ``slice`` is 0 (whole images only)."""
    if not eval_config.slice:
        return None
    return SliceOptions(
        eval_config.slice,
        overlap=eval_config.slice_overlap,
        merge=eval_config.slice_merge,
        full_image=eval_config.slice_full_image,
        merge_iou=eval_config.slice_merge_iou,
    )


def tiling_problem(size: Any, overlap: Any) -> Optional[tuple[str, str]]:
    """None when ``size`` (tile side in pixels) and ``overlap`` are a usable tiling, else ``(key, allowed)``:
    the option at fault (``slice`` or ``slice_overlap``) and what it allows. The one check behind
    :func:`check_tiling` (``--slice``/``--overlap``, ``predict(slice=...)``) and ``eval.slice*``."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_TILE_SIDE:
        return "slice", f"a tile side in pixels, a whole number >= {MIN_TILE_SIDE} (e.g. 512)"
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap <= MAX_OVERLAP:
        return (
            "slice_overlap",
            f"the fraction of a tile shared with its neighbour, a number in [0, {MAX_OVERLAP}] (e.g. 0.2)",
        )
    return None


def check_tiling(size: Any, overlap: Any) -> None:
    """ConfigError unless ``size`` is a tile side of at least :data:`MIN_TILE_SIDE` pixels and ``overlap``
    a fraction in [0, :data:`MAX_OVERLAP`] (:func:`tiling_problem`)."""
    problem = tiling_problem(size, overlap)
    if problem is not None:
        key, allowed = problem
        given = f"slice size {size!r}" if key == "slice" else f"slice overlap {overlap!r}"
        raise ConfigError(f"{given}: pass {allowed}")


def count_tiles(height: int, width: int, size: int, overlap: float) -> int:
    """How many windows :func:`tile_windows` makes for an image ``height`` x ``width``, without making them."""
    step = size - int(size * overlap)
    along = lambda length: 1 if length <= size else -(-(length - size) // step) + 1  # noqa: E731
    return along(height) * along(width)


def check_tile_count(height: int, width: int, size: int, overlap: float) -> None:
    """DetectFTError when an image ``height`` x ``width`` would make more than :data:`MAX_TILES_PER_IMAGE`
    tiles (or holds more than ``limits.MAX_IMAGE_PIXELS`` pixels), before any tile is planned."""
    check_pixels("an image to slice", width, height)
    tiles = count_tiles(height, width, size, overlap)
    if tiles > MAX_TILES_PER_IMAGE:
        raise DetectFTError(
            f"slicing a {width}x{height} image into {size}-pixel tiles overlapping by {overlap:g} makes "
            f"{tiles} tiles, more than {MAX_TILES_PER_IMAGE} per image; pass a larger slice size or a smaller overlap"
        )


def _starts(length: int, size: int, step: int) -> list[int]:
    """Tile starts along one axis: every ``step`` pixels, the last tile ending exactly at ``length``."""
    if length <= size:
        return [0]
    return list(range(0, length - size, step)) + [length - size]


def tile_windows(height: int, width: int, size: int, overlap: float = 0.2) -> np.ndarray:
    """The tiles of an image ``height`` x ``width``: int64 (T, 4) xyxy windows, row by row.

    Tiles are ``size`` x ``size`` and start every ``size - floor(size * overlap)`` pixels; the last row
    and column are moved back to end at the image border, so every pixel is covered and no tile leaves
    the image. Along a side shorter than ``size`` there is one tile, as long as that side (an image
    smaller than a tile is one window: the whole image).
    """
    check_tiling(size, overlap)
    if height < 1 or width < 1:
        raise ConfigError(f"cannot tile an image of {height}x{width} pixels; pass a non-empty image")
    check_tile_count(height, width, size, overlap)
    step = size - int(size * overlap)  # >= size / 10 because overlap <= 0.9
    windows = [
        (x, y, min(x + size, width), min(y + size, height))
        for y in _starts(height, size, step)
        for x in _starts(width, size, step)
    ]
    return np.asarray(windows, np.int64).reshape(-1, 4)


def shift_detections(detections: Mapping[str, Any], dx: float, dy: float) -> dict[str, np.ndarray]:
    """Detections of a tile whose top-left corner is at (``dx``, ``dy``) in the image, in image pixels
    (boxes float32 (N, 4) xyxy, scores float32 (N,), labels int64 (N,), as :func:`as_detections`)."""
    det = as_detections(detections)
    det["boxes"] = det["boxes"] + np.asarray([dx, dy, dx, dy], np.float32)
    return det


def _class_offset(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 boxes moved apart per label, so boxes of different classes never overlap (class-wise in one pass)."""
    boxes = boxes.astype(np.float64)
    if not len(boxes):
        return boxes
    span = float(np.abs(boxes).max()) * 2 + 1
    return boxes + (labels.astype(np.float64) * span)[:, None]


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Class-wise non-maximum suppression: the indices kept, by descending score (ties: input order).

    A box is dropped when its IoU with a kept, higher-scored box of the same label is above ``iou``.
    ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,).
    """
    shifted = _class_offset(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1))
    order = np.argsort(-np.asarray(scores).reshape(-1), kind="stable")
    keep = []
    while order.size:
        top, order = order[0], order[1:]
        keep.append(top)
        order = order[box_iou(shifted[top], shifted[order])[0] <= iou]
    return np.asarray(keep, np.int64)


def greedy_merge(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, ios: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise greedy matching and merging: the merged (boxes, scores, labels), by descending score.

    The highest-scored remaining box absorbs every remaining box of its label whose IoS with it is at
    least ``ios``; the group becomes one box, their union, with the group's highest score. Repeats until
    no box remains. ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,); dtypes are kept.
    """
    boxes, scores, labels = np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1), np.asarray(labels)
    shifted = _class_offset(boxes, labels.reshape(-1))
    order = np.argsort(-scores, kind="stable")
    merged, kept = [], []
    while order.size:
        top = order[0]
        group = box_ios(shifted[top], shifted[order])[0] >= ios
        group[0] = True  # a degenerate (zero-area) box still absorbs itself
        members = boxes[order[group]]
        merged.append(np.concatenate([members[:, :2].min(0), members[:, 2:].max(0)]))
        kept.append(top)
        order = order[~group]
    keep = np.asarray(kept, np.int64)
    out = np.asarray(merged, boxes.dtype).reshape(-1, 4)
    return out, scores[keep], labels.reshape(-1)[keep]


def merge_detections(parts: Sequence[Mapping[str, Any]], merge: str = "nms", merge_iou: float = 0.5) -> dict:
    """One image's detections from several passes (tiles shifted into image pixels, the whole image),
    merged by ``merge`` (``nms`` | ``greedy``) at ``merge_iou``: boxes float32 (N, 4) xyxy, scores
    float32 (N,), labels int64 (N,), by descending score."""
    dets = [as_detections(part) for part in parts]
    boxes = np.concatenate([d["boxes"] for d in dets]) if dets else np.zeros((0, 4), np.float32)
    scores = np.concatenate([d["scores"] for d in dets]) if dets else np.zeros(0, np.float32)
    labels = np.concatenate([d["labels"] for d in dets]) if dets else np.zeros(0, np.int64)
    if merge == "greedy":
        boxes, scores, labels = greedy_merge(boxes, scores, labels, merge_iou)
        return {"boxes": boxes, "scores": scores, "labels": labels}
    if merge != "nms":
        raise ConfigError(f"slice merge {merge!r} is not a merge method; choose one of {', '.join(MERGES)}")
    keep = nms(boxes, scores, labels, merge_iou)
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def sliced(
    predict_batch: PredictBatch,
    *,
    size: int,
    overlap: float = 0.2,
    merge: str = "nms",
    full_image: bool = True,
    merge_iou: float = 0.5,
) -> PredictBatch:
    """A :data:`PredictBatch` running ``predict_batch`` on the :func:`tile_windows` of each image (and,
    with ``full_image``, on the whole images), with the detections shifted back and merged
    (:func:`merge_detections`). Returns boxes float32 (N, 4) xyxy in each image's pixels, scores float32,
    labels int64, by descending score. An image no larger than one tile is run once, whole.
    """
    options = SliceOptions(size, overlap, merge, full_image, merge_iou)

    def predict_sliced(images: list[np.ndarray]) -> list[dict]:
        for image in images:  # before any pass runs: an image that makes too many tiles is refused whole
            check_tile_count(*np.asarray(image).shape[:2], options.size, options.overlap)
        whole = list(predict_batch(list(images))) if options.full_image else [None] * len(images)
        return [_predict_image(predict_batch, image, full, options) for image, full in zip(images, whole)]

    return predict_sliced


def _predict_image(predict_batch: PredictBatch, image: np.ndarray, full: Any, options: SliceOptions) -> dict:
    height, width = np.asarray(image).shape[:2]
    windows = tile_windows(height, width, options.size, options.overlap)
    if full is not None and len(windows) == 1:  # the one tile is the whole image, already run
        full = as_detections(full)
        order = np.argsort(-full["scores"], kind="stable")
        return {key: value[order] for key, value in full.items()}
    parts = [] if full is None else [full]
    for first in range(0, len(windows), TILE_BATCH):
        chunk = windows[first : first + TILE_BATCH]
        tiles = [np.ascontiguousarray(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in chunk]
        outputs = list(predict_batch(tiles))
        if len(outputs) != len(tiles):
            raise DetectFTError(
                f"the predictor returned {len(outputs)} results for {len(tiles)} tiles; "
                "predict_batch must return one dict per image"
            )
        parts += [shift_detections(out, x1, y1) for out, (x1, y1, _, _) in zip(outputs, chunk)]
    return merge_detections(parts, options.merge, options.merge_iou)
