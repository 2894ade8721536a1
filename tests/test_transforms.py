"""Box-aware augmentation: invariants over every preset, box/label alignment, seeding, edge cases."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detect_ft.data.transforms import (
    MEAN_RGB,
    PRESETS,
    BoxTransform,
    MinIoURandomCrop,
    SizeKeepingMosaic,
    ZoomOut,
    _light,
    _ssd,
    build_transform,
    sanitize_boxes,
    slice_crop,
)
from detect_ft.utils.errors import ConfigError


def _grey(label: int) -> int:
    return 30 + 40 * label  # labels 1..5 -> 70..230, far apart and far from the 0 background


def _painted(width: int, height: int, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A black image with each box filled in its label's grey, so a box's content identifies it."""
    image = np.zeros((height, width, 3), np.uint8)
    for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
        image[y1:y2, x1:x2] = _grey(int(label))
    return image


def _disjoint_boxes(width: int, height: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` non-overlapping integer boxes in a grid, some touching the image borders."""
    cols, rows = 3, 2
    cell_w, cell_h = width // cols, height // rows
    boxes = []
    for k in rng.permutation(cols * rows)[:n]:
        cx, cy = (k % cols) * cell_w, (k // cols) * cell_h
        x1 = cx if rng.random() < 0.5 else cx + int(rng.integers(0, cell_w // 3))
        y1 = cy if rng.random() < 0.5 else cy + int(rng.integers(0, cell_h // 3))
        x2 = cx + cell_w if rng.random() < 0.5 else x1 + max(8, int(rng.integers(cell_w // 2, cell_w - (x1 - cx) + 1)))
        y2 = cy + cell_h if rng.random() < 0.5 else y1 + max(8, int(rng.integers(cell_h // 2, cell_h - (y1 - cy) + 1)))
        boxes.append([x1, y1, min(x2, cx + cell_w), min(y2, cy + cell_h)])
    return np.array(boxes, np.float32).reshape(-1, 4)


def _check_invariants(image, boxes, labels, allowed_labels) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
    assert labels.dtype == np.int64
    height, width = image.shape[:2]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert set(labels.tolist()) <= set(allowed_labels)


def _check_alignment(image, boxes, labels) -> None:
    """The centre pixel of each (not too thin) output box still shows its own label's grey."""
    for (x1, y1, x2, y2), label in zip(boxes, labels):
        if x2 - x1 < 4 or y2 - y1 < 4:
            continue  # interpolation blurs a box this thin into the background
        value = int(image[int((y1 + y2) / 2), int((x1 + x2) / 2), 0])
        assert abs(value - _grey(int(label))) <= 12, (label, value, (x1, y1, x2, y2))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    preset=st.sampled_from(sorted(PRESETS)),
    width=st.integers(24, 128),
    height=st.integers(24, 128),
    n=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_preset_keeps_boxes_valid(preset: str, width: int, height: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = _disjoint_boxes(width, height, n, rng)
    labels = np.arange(1, len(boxes) + 1, dtype=np.int64)
    # Boxes poking out of the image and degenerate ones must be tolerated, not raise.
    noisy = np.concatenate([boxes, [[-5, -5, 10, 10], [width - 3, 2, width + 9, 9], [4, 4, 4, 9]]]).astype(np.float32)
    noisy_labels = np.concatenate([labels, [6, 6, 6]])
    transform = build_transform(preset, train=True)
    transform.set_seed(seed)
    extra = [(_painted(width, height, boxes, labels), boxes, labels)] * transform.num_extra
    for _ in range(3):
        image, out_boxes, out_labels = transform(
            _painted(width, height, boxes, labels), noisy, noisy_labels, extra=extra
        )
        _check_invariants(image, out_boxes, out_labels, noisy_labels)


@pytest.mark.parametrize("preset", sorted(set(PRESETS) - {"none"}))
def test_background_images_and_vanishing_boxes(preset: str) -> None:
    image = np.full((48, 64, 3), 90, np.uint8)
    transform = build_transform(preset, train=True, min_area=1e9)  # nothing can survive this
    transform.set_seed(0)
    extra = [(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))] * transform.num_extra
    for boxes in (np.zeros((0, 4), np.float32), np.array([[0, 0, 64, 48], [10, 10, 20, 20]], np.float32)):
        for _ in range(10):
            out_image, out_boxes, out_labels = transform(image, boxes, np.ones(len(boxes), np.int64), extra=extra)
            assert out_boxes.shape == (0, 4) and out_boxes.dtype == np.float32
            assert out_labels.shape == (0,) and out_labels.dtype == np.int64
            assert out_image.ndim == 3


def test_flip_moves_each_box_with_its_label() -> None:
    width, height = 100, 60
    boxes = np.array([[0, 0, 30, 20], [40, 10, 100, 60], [10, 30, 25, 59]], np.float32)
    labels = np.array([3, 1, 2], np.int64)
    transform = BoxTransform([A.HorizontalFlip(p=1.0)], min_area=4.0, min_visibility=0.2)
    image, out_boxes, out_labels = transform(_painted(width, height, boxes, labels), boxes, labels)
    expected = boxes.copy()
    expected[:, [0, 2]] = width - boxes[:, [2, 0]]
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_allclose(out_boxes, expected, atol=1e-4)
    _check_alignment(image, out_boxes, out_labels)


@pytest.mark.parametrize(
    "steps",
    [lambda: _light()[:2], lambda: _ssd()[2:]],  # the geometric steps of light and ssd (no colour change)
    ids=["light-geometry", "ssd-geometry"],
)
def test_geometric_steps_keep_boxes_on_their_objects(steps) -> None:
    rng = np.random.default_rng(0)
    transform = BoxTransform(steps(), min_area=4.0, min_visibility=0.2)
    transform.set_seed(0)
    for trial in range(40):
        width, height = int(rng.integers(48, 128)), int(rng.integers(48, 128))
        boxes = _disjoint_boxes(width, height, 5, rng)
        labels = np.arange(1, len(boxes) + 1, dtype=np.int64)
        image, out_boxes, out_labels = transform(_painted(width, height, boxes, labels), boxes, labels)
        _check_invariants(image, out_boxes, out_labels, labels)
        assert len(set(out_labels.tolist())) == len(out_labels)  # no box duplicated or relabelled
        _check_alignment(image, out_boxes, out_labels)


def test_mosaic_keeps_boxes_on_their_objects() -> None:
    rng = np.random.default_rng(1)
    mosaic = SizeKeepingMosaic(p=1.0)
    transform = BoxTransform([], min_area=4.0, min_visibility=0.2, mixer=mosaic, mix_p=1.0, num_extra=3)
    transform.set_seed(1)
    seen_extra_labels = False
    for trial in range(30):
        samples = []
        # Labels unique over the four images (1..5), so every output box can be traced to its object.
        for labels in ([1, 2], [3, 4], [5], []):
            boxes = _disjoint_boxes(96, 64, len(labels), rng)
            labels = np.array(labels, np.int64)
            samples.append((_painted(96, 64, boxes, labels), boxes, labels))
        image, out_boxes, out_labels = transform(*samples[0], extra=samples[1:])
        _check_invariants(image, out_boxes, out_labels, [1, 2, 3, 4, 5])
        assert image.shape == samples[0][0].shape  # the mosaic keeps the primary image's size
        assert len(set(out_labels.tolist())) == len(out_labels)
        _check_alignment(image, out_boxes, out_labels)
        seen_extra_labels |= bool(set(out_labels.tolist()) & {3, 4, 5})
    assert seen_extra_labels, "mosaic never used the extra samples"


def test_strong_fetches_extra_samples_only_when_mosaic_runs() -> None:
    transform = build_transform("strong", train=True)
    transform.set_seed(2)
    image = np.zeros((32, 48, 3), np.uint8)
    sample = (image, np.array([[2, 2, 20, 20]], np.float32), np.array([1], np.int64))
    calls = []

    def fetch():
        calls.append(1)
        return [sample] * transform.num_extra

    for _ in range(200):
        transform(*sample, extra=fetch)
    assert transform.num_extra == 3 and 60 <= len(calls) <= 140  # p = 0.5
    assert build_transform("light", train=True).num_extra == 0


def test_zoom_out_preserves_box_sizes_and_content() -> None:
    transform = BoxTransform([ZoomOut(side_range=(2.0, 3.0), p=1.0)], min_area=0.0, min_visibility=0.0)
    transform.set_seed(3)
    boxes = np.array([[0, 0, 20, 20], [30, 10, 64, 48]], np.float32)
    labels = np.array([1, 2], np.int64)
    image, out_boxes, out_labels = transform(_painted(64, 48, boxes, labels), boxes, labels)
    assert image.shape[0] >= 96 and image.shape[1] >= 128
    np.testing.assert_allclose(out_boxes[:, 2:] - out_boxes[:, :2], boxes[:, 2:] - boxes[:, :2], atol=1e-3)
    _check_alignment(image, out_boxes, out_labels)


def test_min_iou_crop_keeps_only_boxes_whose_centre_is_inside() -> None:
    crop = MinIoURandomCrop(min_ious=(0.5,), p=1.0)
    transform = BoxTransform([crop], min_area=0.0, min_visibility=0.0)
    transform.set_seed(5)
    boxes = np.array([[0, 0, 30, 30], [60, 40, 100, 80], [10, 50, 40, 78]], np.float32)
    labels = np.array([1, 2, 3], np.int64)
    for _ in range(30):
        image, out_boxes, out_labels = transform(_painted(100, 80, boxes, labels), boxes, labels)
        x1, y1, x2, y2 = crop.params["crop_coords"]
        assert image.shape[:2] == (y2 - y1, x2 - x1)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = (centres[:, 0] > x1) & (centres[:, 0] < x2) & (centres[:, 1] > y1) & (centres[:, 1] < y2)
        np.testing.assert_array_equal(out_labels, labels[inside])
        assert len(out_labels) >= 1  # a qualifying patch always holds a box overlapping it by IoU >= 0.5
        _check_alignment(image, out_boxes, out_labels)


def test_same_seed_same_augmentation() -> None:
    boxes = np.array([[5, 5, 40, 30], [50, 20, 90, 60]], np.float32)
    labels = np.array([1, 2], np.int64)
    image = _painted(100, 64, boxes, labels)
    runs = []
    for _ in range(2):
        transform = build_transform("ssd", train=True)
        transform.set_seed(11)
        runs.append([transform(image, boxes, labels) for _ in range(5)])
    for (im_a, b_a, l_a), (im_b, b_b, l_b) in zip(*runs):
        np.testing.assert_array_equal(im_a, im_b)
        np.testing.assert_array_equal(b_a, b_b)
        np.testing.assert_array_equal(l_a, l_b)


def test_none_preset_only_sanitises() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    boxes = np.array([[1, 1, 2, 2], [-4, 3, 20, 8], [5, 5, 5, 9]], np.float32)
    out_image, out_boxes, out_labels = build_transform("none", train=True, min_area=1e9)(
        image, boxes, np.array([1, 2, 3])
    )
    assert out_image is image
    np.testing.assert_array_equal(out_boxes, [[1, 1, 2, 2], [0, 3, 12, 8]])  # tiny boxes stay: nothing shrank
    np.testing.assert_array_equal(out_labels, [1, 2])


def test_eval_transform_is_identity_and_unknown_preset_is_a_config_error() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    boxes = np.array([[1, 1, 5, 5]], np.float32)
    labels = np.array([1], np.int64)
    out = build_transform("strong", train=False)(image, boxes, labels)
    assert out[0] is image and out[1] is boxes and out[2] is labels
    with pytest.raises(ConfigError, match="augment.preset"):
        build_transform("heavy", train=True)


def test_sanitize_boxes_clips_and_drops_degenerate() -> None:
    boxes = np.array([[-3, -3, 5, 5], [8, 2, 8, 6], [9, 9, 20, 20], [np.nan, 0, 1, 1]], np.float32)
    out, labels = sanitize_boxes(boxes, np.array([1, 2, 3, 4]), width=10, height=10)
    np.testing.assert_array_equal(out, [[0, 0, 5, 5], [9, 9, 10, 10]])
    np.testing.assert_array_equal(labels, [1, 3])
    with pytest.raises(ValueError):
        sanitize_boxes(boxes, np.array([1]), width=10, height=10)


def _coordinates(width: int, height: int) -> np.ndarray:
    """An image whose pixel (x, y) reads R = x % 256, B = x // 256, G = y: a crop tells where it was cut."""
    image = np.zeros((height, width, 3), np.uint8)
    xs = np.arange(width)
    image[:, :, 0] = xs % 256
    image[:, :, 2] = xs // 256
    image[:, :, 1] = np.arange(height)[:, None]
    return image


def _expected_crop(boxes, labels, left: int, top: int, size: int, min_visibility: float):
    """The boxes of a ``size`` window at (left, top), clipped, kept when enough of their area is inside."""
    shifted = boxes - np.array([left, top, left, top], np.float32)
    clipped = np.clip(shifted, 0, size)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = inside / area >= min_visibility
    return clipped[keep], labels[keep]


def test_slice_crop_cuts_a_window_and_keeps_clips_or_drops_each_box() -> None:
    size, min_visibility = 100, 0.51  # 40 px boxes: never exactly at the threshold
    boxes = np.array([[130, 20, 170, 60], [60, 30, 100, 70], [230, 10, 270, 50], [10, 50, 50, 90]], np.float32)
    labels = np.array([1, 2, 3, 4], np.int64)
    image = _coordinates(300, 120)
    transform = build_transform("none", train=True, min_area=0.0, min_visibility=min_visibility, crop_size=size)
    transform.set_seed(0)
    seen = set()
    for _ in range(60):
        out, out_boxes, out_labels = transform(image, boxes, labels)
        assert out.shape == (size, size, 3)
        left, top = int(out[0, 0, 0]) + 256 * int(out[0, 0, 2]), int(out[0, 0, 1])
        np.testing.assert_array_equal(out, image[top : top + size, left : left + size])  # original pixels
        expected_boxes, expected_labels = _expected_crop(boxes, labels, left, top, size, min_visibility)
        np.testing.assert_array_equal(out_labels, expected_labels)
        np.testing.assert_allclose(out_boxes, expected_boxes, atol=1e-3)
        for box, label in zip(boxes, labels):
            x1, x2 = box[0] - left, box[2] - left
            y1, y2 = box[1] - top, box[3] - top
            whole = x1 >= 0 and y1 >= 0 and x2 <= size and y2 <= size
            outside = x2 <= 0 or x1 >= size or y2 <= 0 or y1 >= size
            seen.add(
                "inside" if whole else "outside" if outside else "cut kept" if label in out_labels else "cut dropped"
            )
    assert seen == {"inside", "outside", "cut kept", "cut dropped"}


def test_slice_crop_known_answer_half_cut_box() -> None:
    """A window that must start at x = 0: a box inside, one cut in half, one outside."""
    boxes = np.array([[10, 10, 50, 50], [80, 20, 120, 60], [150, 30, 190, 70]], np.float32)
    labels = np.array([1, 2, 3], np.int64)
    for min_visibility, kept in ((0.4, [1, 2]), (0.6, [1])):
        transform = BoxTransform([], min_area=0.0, min_visibility=min_visibility, crop=slice_crop(100))
        for seed in range(20):
            transform.set_seed(seed)
            out, out_boxes, out_labels = transform(_coordinates(200, 100), boxes, labels)
            if out[0, 0, 0] == 0:  # the window starts at x = 0
                break
        else:
            pytest.fail("no window at x = 0 in 20 seeds")
        np.testing.assert_array_equal(out_labels, kept)
        np.testing.assert_allclose(out_boxes, [[10, 10, 50, 50], [80, 20, 100, 60]][: len(kept)], atol=1e-3)


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
def test_slice_crop_output_is_always_the_crop_size(preset: str) -> None:
    """Larger, smaller (padded) and mixed images all come out crop_size x crop_size, mosaics too."""
    size = 64
    transform = build_transform(preset, train=True, crop_size=size)
    transform.set_seed(4)
    for width, height in ((200, 150), (40, 30), (300, 50), (64, 64)):
        boxes = np.array([[2, 2, 20, 20], [width - 20, height - 20, width - 2, height - 2]], np.float32)
        labels = np.array([1, 2], np.int64)
        extra = [(_painted(90, 70, boxes[:1], labels[:1]), boxes[:1], labels[:1])] * transform.num_extra
        for _ in range(5):
            image, out_boxes, out_labels = transform(_painted(width, height, boxes, labels), boxes, labels, extra=extra)
            assert image.shape == (size, size, 3)
            _check_invariants(image, out_boxes, out_labels, [1, 2])


def test_slice_crop_pads_a_small_image_with_the_mean_colour() -> None:
    transform = build_transform("none", train=True, crop_size=50)
    transform.set_seed(0)
    boxes, labels = np.array([[5, 5, 15, 15]], np.float32), np.array([1], np.int64)
    image, out_boxes, out_labels = transform(np.full((20, 30, 3), 7, np.uint8), boxes, labels)
    assert image.shape == (50, 50, 3)
    assert (image == 7).all(axis=2).sum() == 20 * 30  # every original pixel, none resized
    assert ((image == 7).all(axis=2) | (image == MEAN_RGB).all(axis=2)).all()
    np.testing.assert_array_equal(out_labels, [1])
    np.testing.assert_allclose(out_boxes[:, 2:] - out_boxes[:, :2], [[10, 10]], atol=1e-3)  # only moved


def test_slice_crop_of_a_background_image() -> None:
    transform = build_transform("light", train=True, crop_size=32)
    transform.set_seed(0)
    for _ in range(5):
        image, boxes, labels = transform(np.zeros((80, 120, 3), np.uint8), np.zeros((0, 4)), np.zeros((0,)))
        assert image.shape == (32, 32, 3)
        assert boxes.shape == (0, 4) and boxes.dtype == np.float32 and labels.shape == (0,) and labels.dtype == np.int64


def test_slice_crops_mostly_hold_a_box_but_not_always() -> None:
    """One small object in a large image: most crops contain it (few empty batches), some are background."""
    transform = build_transform("none", train=True, crop_size=100)
    transform.set_seed(0)
    boxes, labels = np.array([[700, 300, 720, 320]], np.float32), np.array([1], np.int64)
    image = np.zeros((800, 1000, 3), np.uint8)
    holding = sum(len(transform(image, boxes, labels)[2]) for _ in range(200))
    assert 130 <= holding <= 190  # OBJECT_CROP_P = 0.8 places a window on it; a random one rarely hits it


def test_slice_crop_is_repeatable_with_the_seed() -> None:
    boxes = np.array([[5, 5, 40, 30], [150, 80, 190, 120]], np.float32)
    labels = np.array([1, 2], np.int64)
    image = _coordinates(240, 160)
    runs = []
    for seed in (3, 3, 4):
        transform = build_transform("light", train=True, crop_size=64)
        transform.set_seed(seed)
        runs.append([transform(image, boxes, labels) for _ in range(8)])
    for (im_a, b_a, l_a), (im_b, b_b, l_b) in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(im_a, im_b)
        np.testing.assert_array_equal(b_a, b_b)
        np.testing.assert_array_equal(l_a, l_b)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(runs[0], runs[2]))


def test_mosaic_of_slice_crops_keeps_every_image_at_its_own_scale() -> None:
    """The other images of a mosaic are cropped too: their boxes keep their pixel sizes (no resize)."""
    transform = BoxTransform(
        [],
        min_area=0.0,
        min_visibility=0.0,
        mixer=SizeKeepingMosaic(p=1.0),
        mix_p=1.0,
        num_extra=3,
        crop=slice_crop(64),
    )
    transform.set_seed(0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        samples = []
        for label in (1, 2, 3, 4):
            x, y = int(rng.integers(0, 180)), int(rng.integers(0, 130))
            boxes, labels = np.array([[x, y, x + 12, y + 12]], np.float32), np.array([label], np.int64)
            samples.append((_painted(200, 150, boxes, labels), boxes, labels))
        image, out_boxes, out_labels = transform(*samples[0], extra=samples[1:])
        assert image.shape == (64, 64, 3)
        sides = out_boxes[:, 2:] - out_boxes[:, :2]
        whole = (out_boxes[:, :2] > 0).all(axis=1) & (out_boxes[:, 2:] < 64).all(axis=1)
        np.testing.assert_allclose(sides[whole], 12, atol=0.5)
        _check_alignment(image, out_boxes, out_labels)


def test_crop_size_is_a_checked_config_key() -> None:
    from detect_ft.config.schema import load_config

    assert load_config(None, []).augment.crop_size == 0
    assert load_config(None, ["augment.crop_size=640"]).augment.crop_size == 640
    for bad in ("-1", "100000", "1.5"):
        with pytest.raises(ConfigError, match="augment.crop_size"):
            load_config(None, [f"augment.crop_size={bad}"])


def test_importing_the_toolkit_makes_no_network_call() -> None:
    """albumentations phones pypi.org on import unless told not to; detect-ft tells it (offline machines
    would wait for a timeout in every data-loader process)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "calls = []\n"
        "sys.addaudithook(lambda event, args: calls.append(event) if event.split('.')[0] in ('socket', 'urllib') else None)\n"
        "import detect_ft.data.transforms, detect_ft.api, detect_ft.cli.main\n"
        "print(sorted(set(calls)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
