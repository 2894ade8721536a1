"""Anchor shapes fitted to a split's boxes, and how much of the split an anchor set covers (numpy only).

An anchor set keeps torchvision's own layout, so a fitted set has the same number of anchors per location
as the model's default one (and its heads keep every pretrained tensor). Two kinds, named by the
torchvision module that makes them (:mod:`detect_ft.models.anchors` reads and sets them on a model):

| kind | used by | ``sizes`` | ``ratios`` | shapes per location of level ``k`` |
| --- | --- | --- | --- | --- |
| ``grid`` (``AnchorGenerator``) | Faster R-CNN (its RPN), RetinaNet | per level, sizes in input pixels (the square root of the anchor's area) | per level, height / width | every size x every ratio of the level |
| ``ssd`` (``DefaultBoxGenerator``) | SSD, SSDLite | one row: the ``L + 1`` scales, fractions of the input side | per level, width / height ``r`` | squares ``s_k`` and ``sqrt(s_k s_k+1)``; ``s_k sqrt(r) x s_k / sqrt(r)`` and its transpose per ``r`` |

**Coverage** is the share of boxes whose best anchor shape, centred on the box, has IoU >= 0.5 with it:
the IoU of widths and heights only (the usual anchor-fitness measure, as in k-means anchor fitting). It
says whether the right shapes exist, not whether an anchor centre lies near every box: the levels'
strides and the training augmentation are not modelled.

**Fitting** is 1-D k-means in log space, started from quantiles (deterministic): the sizes on
``log sqrt(w h)``, sorted from the finest level to the coarsest, and the ratios on ``log(h / w)``
(``grid``) or ``|log(w / h)|`` (``ssd``, whose ratios come in both orientations).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Literal, Optional

import numpy as np

IOU_THRESHOLD = 0.5
_CHUNK = 65536  # boxes per block of the (boxes, shapes) IoU matrix


@dataclass(frozen=True)
class InputResize:
    """How a model resizes an image before its anchors see it: ``fixed`` (width, height), each axis scaled
    on its own (SSD, SSDLite); else torchvision's short side to ``min_size``, capped so the long side is at
    most ``max_size`` (both axes by one factor)."""

    fixed: Optional[tuple[int, int]] = None
    min_size: int = 800
    max_size: int = 1333

    def __str__(self) -> str:
        if self.fixed is not None:
            return f"{self.fixed[0]}x{self.fixed[1]}, each axis scaled on its own"
        return f"short side {self.min_size}, long side at most {self.max_size}"

    def scales(self, width: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The factors ``(sx, sy)`` that take image pixels to input pixels, per image."""
        width, height = np.asarray(width, np.float64), np.asarray(height, np.float64)
        if self.fixed is not None:
            return self.fixed[0] / width, self.fixed[1] / height
        factor = np.minimum(self.min_size / np.minimum(width, height), self.max_size / np.maximum(width, height))
        return factor, factor


@dataclass(frozen=True)
class AnchorSet:
    """An anchor set in torchvision's own terms (the module doc's table says what ``sizes``/``ratios`` hold)."""

    kind: Literal["grid", "ssd"]
    sizes: tuple[tuple[float, ...], ...]
    ratios: tuple[tuple[float, ...], ...]

    def legend(self) -> str:
        """What the ``sizes`` and ``ratios`` of this kind hold."""
        if self.kind == "ssd":
            return "sizes: SSD's scales, fractions of the input side; ratios: width / height per level, both ways"
        return "sizes: per feature level, in input pixels (sqrt of the area); ratios: height / width per level"

    def per_location(self) -> list[int]:
        """Anchors per feature-map location, per level (what the heads' shapes depend on)."""
        if self.kind == "ssd":
            return [2 + 2 * len(r) for r in self.ratios]
        return [len(s) * len(r) for s, r in zip(self.sizes, self.ratios)]

    def shapes(self, input_wh: tuple[int, int] = (1, 1)) -> np.ndarray:
        """Every distinct anchor shape, ``(M, 2)`` width and height in input pixels; ``input_wh`` (the input's
        width, height) scales the ``ssd`` kind's fractions."""
        out = []
        if self.kind == "grid":
            for sizes, ratios in zip(self.sizes, self.ratios):
                for r in ratios:
                    for s in sizes:
                        # torchvision rounds each half-extent to whole pixels
                        out.append((2 * np.round(s / math.sqrt(r) / 2), 2 * np.round(s * math.sqrt(r) / 2)))
        else:
            scales = self.sizes[0]
            for k, ratios in enumerate(self.ratios):
                s, s_next = scales[k], math.sqrt(scales[k] * scales[k + 1])
                pairs = [(s, s), (s_next, s_next)]
                for r in ratios:
                    pairs += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
                # DefaultBoxGenerator clips the relative sizes to [0, 1]
                out += [(min(w, 1.0) * input_wh[0], min(h, 1.0) * input_wh[1]) for w, h in pairs]
        return np.unique(np.asarray(out, np.float64).reshape(-1, 2), axis=0)

    def config_values(self) -> tuple[list[list[float]], list[list[float]]]:
        """``(model.anchor_sizes, model.anchor_ratios)`` as the config records them."""
        return [[float(v) for v in row] for row in self.sizes], [[float(v) for v in row] for row in self.ratios]


@dataclass(frozen=True)
class AnchorFit:
    """A model's anchors and the ones fitted to a split, with the share of its boxes each covers."""

    current: AnchorSet
    fitted: AnchorSet
    current_coverage: float
    fitted_coverage: float
    boxes: int

    def summary(self) -> str:
        """One line: both coverages."""
        return (
            f"anchors fitted to {self.boxes} training boxes: they cover {self.fitted_coverage:.1%} of them "
            f"(best anchor shape IoU >= {IOU_THRESHOLD}), the model's cover {self.current_coverage:.1%}"
        )

    def config_line(self) -> str:
        """The ``key=value`` overrides that set the fitted anchors (one shell word each)."""
        sizes, ratios = self.fitted.config_values()
        compact = lambda values: json.dumps(values, separators=(",", ":"))
        return f"model.anchor_sizes={compact(sizes)} model.anchor_ratios={compact(ratios)}"


def box_sizes(records: Iterable, resize: InputResize) -> np.ndarray:
    """Widths and heights ``(N, 2)`` of the non-crowd boxes (xyxy pixels) of ``records`` (``ImageRecord``s)
    as the model sees them, after its own resize; boxes without area are left out."""
    rows = []
    for record in records:
        boxes = np.asarray(record.boxes, np.float64)[~np.asarray(record.iscrowd, bool)]
        if not len(boxes):
            continue
        sx, sy = resize.scales(record.width, record.height)
        rows.append(np.stack([(boxes[:, 2] - boxes[:, 0]) * sx, (boxes[:, 3] - boxes[:, 1]) * sy], axis=1))
    wh = np.concatenate(rows) if rows else np.zeros((0, 2))
    return wh[np.isfinite(wh).all(axis=1) & (wh > 0).all(axis=1)]


def best_shape_iou(box_wh: np.ndarray, anchor_wh: np.ndarray) -> np.ndarray:
    """``(N,)``: for each box ``(w, h)``, the best IoU of an anchor shape ``(M, 2)`` centred on it."""
    box_wh, anchor_wh = np.asarray(box_wh, np.float64).reshape(-1, 2), np.asarray(anchor_wh, np.float64)
    best = np.zeros(len(box_wh))
    for start in range(0, len(box_wh), _CHUNK):
        b = box_wh[start : start + _CHUNK, None, :]
        inter = np.minimum(b[..., 0], anchor_wh[None, :, 0]) * np.minimum(b[..., 1], anchor_wh[None, :, 1])
        union = b[..., 0] * b[..., 1] + anchor_wh[None, :, 0] * anchor_wh[None, :, 1] - inter
        best[start : start + _CHUNK] = (inter / union).max(axis=1)
    return best


def coverage(box_wh: np.ndarray, anchor_wh: np.ndarray, threshold: float = IOU_THRESHOLD) -> float:
    """The share of boxes whose best anchor shape reaches IoU ``threshold`` (NaN without boxes)."""
    if not len(box_wh):
        return float("nan")
    return float((best_shape_iou(box_wh, anchor_wh) >= threshold).mean())


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """``k`` sorted cluster centres of ``values`` (1-D), started at the quantiles ``(i + 0.5) / k``;
    an empty cluster keeps its centre. Deterministic."""
    values = np.sort(np.asarray(values, np.float64).ravel())
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        cluster = np.searchsorted((centres[1:] + centres[:-1]) / 2, values)
        sums = np.bincount(cluster, weights=values, minlength=k)
        counts = np.bincount(cluster, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        if np.allclose(updated, centres, rtol=0, atol=1e-12):
            break
        centres = np.sort(updated)
    return centres


def fit_anchors(box_wh: np.ndarray, current: AnchorSet, input_wh: tuple[int, int] = (1, 1)) -> AnchorSet:
    """An anchor set of ``current``'s kind and counts (sizes per level, ratios per level) fitted to the
    boxes ``(N, 2)`` (widths, heights in input pixels; N >= 1); ``input_wh`` as in :meth:`AnchorSet.shapes`."""
    w, h = np.asarray(box_wh, np.float64).T
    if current.kind == "ssd":
        return _fit_ssd(w / input_wh[0], h / input_wh[1], current)
    log_scale = np.log(np.sqrt(w * h))
    if all(row == current.sizes[0] for row in current.sizes):  # every level has the same sizes
        row = tuple(_rounded(np.exp(kmeans_1d(log_scale, len(current.sizes[0])))))
        sizes = (row,) * len(current.sizes)
    else:  # finer levels take the smaller sizes
        centres = _rounded(np.exp(kmeans_1d(log_scale, sum(len(row) for row in current.sizes))))
        ends = np.cumsum([len(row) for row in current.sizes])
        sizes = tuple(tuple(centres[end - len(row) : end]) for row, end in zip(current.sizes, ends))
    ratios = tuple(tuple(_rounded(np.exp(kmeans_1d(np.log(h / w), len(row))))) for row in current.ratios)
    return AnchorSet("grid", sizes, ratios)


def _fit_ssd(w: np.ndarray, h: np.ndarray, current: AnchorSet) -> AnchorSet:
    """SSD's ``L + 1`` scales from ``2 L`` square-size centres ``c``: ``s_k = c_2k``, and the last scale
    makes ``sqrt(s_L-1 s_L) = c_2L-1``; per level, ratios >= 1 from ``|log(w / h)|``."""
    levels = len(current.ratios)
    c = np.exp(kmeans_1d(np.log(np.sqrt(w * h)), 2 * levels))
    scales = [*c[0 : 2 * levels : 2], c[-1] ** 2 / c[-2]]
    ratios = tuple(tuple(_rounded(np.exp(kmeans_1d(np.abs(np.log(w / h)), len(row))))) for row in current.ratios)
    return AnchorSet("ssd", (tuple(_rounded(np.asarray(scales))),), ratios)


def _rounded(values: np.ndarray) -> list[float]:
    """Four significant digits (readable in config.yaml; far below what changes an anchor's IoU)."""
    return [float(f"{v:.4g}") for v in values]


def suggest_anchors(box_wh: np.ndarray, current: AnchorSet, input_wh: tuple[int, int] = (1, 1)) -> AnchorFit:
    """Fit anchors to the boxes ``(N, 2)`` (N >= 1) and measure both sets' coverage of them."""
    fitted = fit_anchors(box_wh, current, input_wh)
    return AnchorFit(
        current=current,
        fitted=fitted,
        current_coverage=coverage(box_wh, current.shapes(input_wh)),
        fitted_coverage=coverage(box_wh, fitted.shapes(input_wh)),
        boxes=len(box_wh),
    )
