"""detect_ft.utils.boxes: the one pairwise box overlap of evaluation, slicing, parity and data generation."""

from __future__ import annotations

import numpy as np
import pytest

from detect_ft.utils.boxes import box_ios, box_iou


def test_iou_and_ios_are_pairwise_float64_with_continuous_widths():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 10, 20], [5, 5, 15, 15], [20, 20, 30, 30]], np.float32)
    iou, ios = box_iou(a, b), box_ios(a, b)
    assert iou.shape == ios.shape == (2, 3) and iou.dtype == ios.dtype == np.float64
    # widths are x2 - x1 (no VOC "+1"): a 10x10 box in a 10x20 one has IoU 100 / 200
    assert iou[0].tolist() == pytest.approx([0.5, 25 / 175, 0.0])
    # IoS divides by the smaller box: the 2x2 box inside the 10x20 one is 1, its IoU 4 / 200
    assert ios[1, 0] == 1.0 and iou[1, 0] == pytest.approx(0.02)
    assert ios[0].tolist() == pytest.approx([1.0, 0.25, 0.0])


def test_empty_and_degenerate_boxes_overlap_nothing():
    point = np.array([[3, 3, 3, 3]], np.float64)
    inverted = np.array([[5, 5, 1, 1]], np.float64)  # x2 < x1: area 0, not negative
    assert box_iou(point, point)[0, 0] == 0.0 and box_ios(point, point)[0, 0] == 0.0
    assert box_iou(inverted, np.array([[0, 0, 6, 6]]))[0, 0] == 0.0
    assert box_ios(inverted, np.array([[0, 0, 6, 6]]))[0, 0] == 0.0
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
