"""Pairwise overlap of axis-aligned boxes, in numpy (no torch: the torch-free ``inference`` package and
``evaluation`` both use it).

Boxes are continuous xyxy pixels ``(x1, y1, x2, y2)``: a box's width is ``x2 - x1``, with no VOC-devkit
"+1" (the VOC reader turns the devkit's 1-based corners into continuous ones on loading). A box with
``x2 < x1`` or ``y2 < y1`` has area 0. Results are float64 whatever the input dtype, so that evaluation
numbers do not depend on whether predictions arrive as float32 or float64.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union, (N, M) float64, of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4); 0 where the
    union is empty (both boxes have zero area)."""
    inter, area_a, area_b = _intersection_and_areas(a, b)
    return _ratio(inter, area_a[:, None] + area_b[None, :] - inter)


def box_ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, (N, M) float64, of xyxy boxes ``a`` (N, 4) and ``b``
    (M, 4); 0 where the smaller box has zero area.

    Unlike IoU it is 1 for a small box inside a big one: a tile's crop of an object against the whole
    object, or two generated shapes of which one hides inside the other.
    """
    inter, area_a, area_b = _intersection_and_areas(a, b)
    return _ratio(inter, np.minimum(area_a[:, None], area_b[None, :]))


def _intersection_and_areas(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection areas (N, M) and the areas (N,) of ``a`` and (M,) of ``b``, all float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter, area_a, area_b


def _ratio(inter: np.ndarray, base: np.ndarray) -> np.ndarray:
    return np.divide(inter, base, out=np.zeros_like(inter, dtype=np.float64), where=base > 0)
