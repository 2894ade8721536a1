"""Sliced inference (detect_ft.inference.slicing): tile geometry, shifting, NMS and greedy merging with hand-computed
answers, a short-sighted fake detector that only slicing lets see small objects (API, eval keys), and
``detect-ft predict model.onnx big.jpg --slice`` with torch unimportable."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest
from helpers import BLOCK_TORCH, run_python, tiny_config

from detect_ft import Detector
from detect_ft.api.evaluate import evaluate_config
from detect_ft.config.schema import load_config
from detect_ft.inference.slicing import (
    MERGES,
    TILE_BATCH,
    SliceOptions,
    greedy_merge,
    merge_detections,
    nms,
    shift_detections,
    sliced,
    tile_windows,
)
from detect_ft.utils.errors import ConfigError, DetectFTError

# -- tile geometry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, size, overlap, xs, ys",
    [
        (640, 640, 256, 0.5, [0, 128, 256, 384], [0, 128, 256, 384]),  # step 128; the last tile ends at the border
        (1024, 1024, 512, 0.0, [0, 512], [0, 512]),  # exact multiple, no overlap
        (1024, 1024, 512, 0.2, [0, 410, 512], [0, 410, 512]),  # step 512 - 102; last one moved back to the border
        (513, 1024, 512, 0.0, [0, 512], [0, 1]),  # a 1-pixel remainder: a second row shifted by one pixel
        (512, 512, 512, 0.2, [0], [0]),  # exactly one tile
        (300, 1000, 512, 0.2, [0, 410, 488], [0]),  # shorter than a tile in one direction only
        (640, 448, 192, 0.34, [0, 127, 254, 256], [0, 127, 254, 381, 448]),  # floor(192 * 0.34) = 65 px overlap
    ],
)
def test_tile_windows_known_answers(height, width, size, overlap, xs, ys):
    windows = tile_windows(height, width, size, overlap)
    expected = [(x, y, min(x + size, width), min(y + size, height)) for y in ys for x in xs]
    assert windows.dtype == np.int64 and windows.tolist() == [list(w) for w in expected]


def test_an_image_smaller_than_a_tile_is_one_window_the_whole_image():
    assert tile_windows(300, 200, 512).tolist() == [[0, 0, 200, 300]]
    assert tile_windows(1, 1, 512, 0.9).tolist() == [[0, 0, 1, 1]]


@pytest.mark.parametrize("height, width, size, overlap", [(197, 231, 64, 0.2), (64, 64, 64, 0.5), (33, 200, 64, 0.0)])
def test_tiles_cover_every_pixel_stay_inside_and_overlap_as_asked(height, width, size, overlap):
    windows = tile_windows(height, width, size, overlap)
    covered = np.zeros((height, width), int)
    for x1, y1, x2, y2 in windows:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x2 - x1 == min(size, width) and y2 - y1 == min(size, height)
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    xs = sorted({int(w[0]) for w in windows})
    assert all(b - a <= size - int(size * overlap) for a, b in zip(xs, xs[1:]))  # neighbours share >= the overlap


@pytest.mark.parametrize(
    "size, overlap, match",
    [
        (0, 0.2, "slice size 0"),
        (-5, 0.2, "slice size -5"),
        (2.5, 0.2, "whole number"),
        (True, 0.2, "slice size"),
        (512, 1.0, "slice overlap 1.0"),
        (512, -0.1, r"\[0, 0.9\]"),
        (1, 0.2, "slice size 1: .*whole number >= 64"),  # a tile side of 1 pixel once planned tiles without end
        (8, 0.99, "slice size 8"),
        (512, 0.99, "slice overlap 0.99"),
    ],
)
def test_bad_size_or_overlap_are_clear_errors(size, overlap, match):
    with pytest.raises(ConfigError, match=match):
        tile_windows(100, 100, size, overlap)
    with pytest.raises(ConfigError, match=match):
        SliceOptions(size, overlap)


def test_tiles_per_image_are_bounded_from_the_image_size_before_planning():
    with pytest.raises(DetectFTError, match=r"10000x10000 image into 64-pixel tiles .* makes 2019241 tiles, more than"):
        tile_windows(10_000, 10_000, 64, 0.9)
    with pytest.raises(DetectFTError, match="beyond the decoder's limit"):
        tile_windows(20_000, 20_000, 512)
    calls = []
    recording = lambda images: calls.append(len(images)) or short_sighted(images)  # noqa: E731
    big = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (4000, 4000, 3))  # 48 MB that are never allocated
    with pytest.raises(DetectFTError, match="318096 tiles, more than 4096 per image"):
        sliced(recording, size=64, overlap=0.9)([big])
    assert calls == []  # refused before the full-image pass or any tile ran
    detector = Detector(predict_batch=recording, model_name="fake", class_names=["square", "slab"])
    for options, match in (({"slice": 1}, "slice size 1"), ({"slice": 8, "overlap": 0.99}, "slice size 8")):
        with pytest.raises(ConfigError, match=match):
            detector.predict(canvas(), **options)
    with pytest.raises(DetectFTError, match="more than 4096 per image"):
        detector.predict(big, slice=64, overlap=0.9)
    assert calls == []


def test_bad_merge_options_are_clear_errors():
    with pytest.raises(ConfigError, match="choose one of nms, greedy"):
        SliceOptions(512, merge="soft")
    with pytest.raises(ConfigError, match=r"merge IoU 0: .*\(0, 1\]"):
        SliceOptions(512, merge_iou=0)
    with pytest.raises(ConfigError, match="merge IoU 'high'"):
        SliceOptions(512, merge_iou="high")
    with pytest.raises(ConfigError, match="choose one of nms, greedy"):
        merge_detections([], merge="wbf")


# -- shifting and merging ------------------------------------------------------------------------------------


def _det(boxes, scores, labels):
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32),
        "labels": np.asarray(labels, np.int64),
    }


def test_shift_detections_moves_boxes_into_image_pixels_and_keeps_dtypes():
    tile = _det([[1, 2, 11, 12], [0, 0, 5, 5]], [0.9, 0.4], [2, 1])
    shifted = shift_detections(tile, 100, 40)
    assert shifted["boxes"].tolist() == [[101, 42, 111, 52], [100, 40, 105, 45]]
    assert shifted["scores"].tolist() == tile["scores"].tolist() and shifted["labels"].tolist() == [2, 1]
    assert (shifted["boxes"].dtype, shifted["scores"].dtype, shifted["labels"].dtype) == (
        np.float32,
        np.float32,
        np.int64,
    )
    assert tile["boxes"][0].tolist() == [1, 2, 11, 12]  # the input is left as it was
    assert shift_detections(_det([], [], []), 5, 5)["boxes"].shape == (0, 4)


BOXES = [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [2, 2, 8, 8]]
SCORES = [0.9, 0.8, 0.7, 0.6]
LABELS = [1, 1, 2, 1]


def test_nms_hand_computed_and_class_wise():
    # box 1 vs box 0: IoU 81 / 119 = 0.68 > 0.5, dropped; box 2 is another class; box 3: IoU 36 / 100 kept
    assert nms(np.asarray(BOXES, np.float32), np.asarray(SCORES), np.asarray(LABELS), 0.5).tolist() == [0, 2, 3]
    assert nms(np.asarray(BOXES, np.float32), np.asarray(SCORES), np.asarray(LABELS), 0.7).tolist() == [0, 1, 2, 3]
    assert nms(np.asarray(BOXES, np.float32), np.asarray(SCORES), np.asarray(LABELS), 0.3).tolist() == [0, 2]
    # an IoU equal to the threshold is kept (dropped only above it); equal scores keep the input order
    half = np.asarray([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    assert nms(half, np.asarray([0.5, 0.5]), np.asarray([1, 1]), 0.5).tolist() == [0, 1]
    assert nms(half, np.asarray([0.5, 0.6]), np.asarray([1, 1]), 0.49).tolist() == [1]
    assert nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)).tolist() == []


def test_greedy_merge_hand_computed_and_class_wise():
    boxes, scores, labels = greedy_merge(
        np.asarray(BOXES, np.float32), np.asarray(SCORES, np.float32), np.asarray(LABELS)
    )
    # box 0 absorbs box 1 (IoS 81 / 100) and box 3 (inside it: IoS 1): union (0, 0, 11, 11), score 0.9
    assert boxes.tolist() == [[0, 0, 11, 11], [0, 0, 10, 10]] and labels.tolist() == [1, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.7]) and (boxes.dtype, scores.dtype) == (np.float32, np.float32)


def test_greedy_merges_a_box_cut_by_a_tile_border_where_nms_keeps_both():
    whole, cut = [0, 0, 100, 20], [60, 0, 100, 20]  # IoU 0.4, IoS 1
    det = _det([cut, whole], [0.9, 0.8], [1, 1])
    assert len(merge_detections([det], "nms", 0.5)["scores"]) == 2
    merged = merge_detections([det], "greedy", 0.5)
    assert merged["boxes"].tolist() == [whole] and merged["scores"].tolist() == pytest.approx([0.9])


def test_greedy_compares_with_the_top_box_not_the_growing_union():
    # B overlaps A (IoS 0.5); C overlaps B (IoS 1 of C) but not A: C stays a box of its own
    a, b, c = [0, 0, 10, 10], [5, 0, 15, 10], [12, 0, 15, 10]
    merged = merge_detections([_det([a, b, c], [0.9, 0.8, 0.7], [1, 1, 1])], "greedy", 0.5)
    assert merged["boxes"].tolist() == [[0, 0, 15, 10], c] and merged["scores"].tolist() == pytest.approx([0.9, 0.7])


def test_merge_detections_joins_passes_by_descending_score_with_the_detection_dtypes():
    full = _det([[0, 0, 50, 50]], [0.5], [1])
    tile = _det([[100, 100, 110, 110], [1, 1, 50, 50]], [0.8, 0.9], [1, 1])  # the second is full's duplicate
    for merge in MERGES:
        out = merge_detections([full, tile], merge, 0.5)
        assert out["scores"].tolist() == pytest.approx([0.9, 0.8])
        assert (out["boxes"].dtype, out["scores"].dtype, out["labels"].dtype) == (np.float32, np.float32, np.int64)
    assert merge_detections([full, tile], "greedy")["boxes"][0].tolist() == [0, 0, 50, 50]  # the union
    assert merge_detections([full, tile], "nms")["boxes"][0].tolist() == [1, 1, 50, 50]  # the higher-scored one
    assert merge_detections([], "nms")["boxes"].shape == (0, 4)


# -- a detector that misses small objects in large inputs -----------------------------------------------------

SEES = 300  # the fake sees white squares only in inputs at most this many pixels on a side
SQUARES = [[252, 100, 264, 112], [800, 600, 812, 612]]  # the first is cut by a tile border (x 256)
SLAB = [100, 300, 700, 560]  # a large object no 256-pixel tile holds whole
TILES = dict(size=256, overlap=0.25)  # x starts 0 192 384 576 744; y starts 0 192 384 544


def canvas() -> np.ndarray:
    image = np.zeros((800, 1000, 3), np.uint8)
    x1, y1, x2, y2 = SLAB
    image[y1:y2, x1:x2] = 128
    for x1, y1, x2, y2 in SQUARES:
        image[y1:y2, x1:x2] = 255
    return image


def _components(mask: np.ndarray) -> np.ndarray:
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    return np.asarray([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:]], np.float32).reshape(-1, 4)


def short_sighted(images: list[np.ndarray]) -> list[dict]:
    """Squares (label 1, score 0.9) only in inputs at most SEES pixels on a side, as a detector's downscaling
    loses small objects; the slab (label 2, score 0.8) in any input, as much of it as the input holds."""
    out = []
    for image in images:
        squares = _components(image[..., 0] == 255) if max(image.shape[:2]) <= SEES else np.zeros((0, 4), np.float32)
        slabs = _components(image[..., 0] == 128)
        out.append(
            _det(
                np.concatenate([squares, slabs]),
                [0.9] * len(squares) + [0.8] * len(slabs),
                [1] * len(squares) + [2] * len(slabs),
            )
        )
    return out


def _boxes(det, label):
    return sorted(det["boxes"][det["labels"] == label].tolist())


def test_slicing_finds_the_small_objects_a_plain_pass_misses():
    plain = short_sighted([canvas()])[0]
    assert _boxes(plain, 1) == [] and _boxes(plain, 2) == [SLAB]
    greedy = sliced(short_sighted, **TILES, merge="greedy")([canvas()])[0]
    assert _boxes(greedy, 1) == SQUARES and _boxes(greedy, 2) == [SLAB]  # pieces and cut boxes merged whole
    assert greedy["scores"].tolist() == pytest.approx([0.9, 0.9, 0.8])
    nms_only = sliced(short_sighted, **TILES, merge="nms")([canvas()])[0]
    found = _boxes(nms_only, 1)
    assert all(square in found for square in SQUARES)
    assert [252, 100, 256, 112] in found  # the cut copy: IoU 1/3 with the whole square, so NMS keeps it
    assert SLAB in _boxes(nms_only, 2)  # from the full-image pass


def test_without_the_full_image_a_large_object_comes_only_in_pieces():
    tiles_only = sliced(short_sighted, **TILES, merge="greedy", full_image=False)([canvas()])[0]
    assert _boxes(tiles_only, 1) == SQUARES and SLAB not in _boxes(tiles_only, 2)


def test_sliced_calls_the_predictor_in_tile_batches_and_runs_small_images_once():
    calls = []

    def recording(images):
        calls.append([image.shape[:2] for image in images])
        return short_sighted(images)

    out = sliced(recording, **TILES)([canvas(), canvas()[:200, :250]])
    assert calls[0] == [(800, 1000), (200, 250)]  # the full-image pass: the caller's batch, once
    tiles = [shape for call in calls[1:] for shape in call]
    assert len(tiles) == 5 * 4 and set(tiles) == {(256, 256)} and max(map(len, calls[1:])) <= TILE_BATCH
    small = short_sighted([canvas()[:200, :250]])[0]
    assert all(np.array_equal(out[1][key], small[key]) for key in small)  # one tile = the whole image: run once
    calls.clear()
    sliced(recording, **TILES, full_image=False)([canvas()[:200, :250]])
    assert calls == [[(200, 250)]]


def test_detector_predict_and_stream_take_the_slicing_options():
    detector = Detector(predict_batch=short_sighted, model_name="fake", class_names=["square", "slab"])
    assert [r.labels.tolist() for r in detector.predict(canvas(), conf=0.5)] == [[2]]
    result = detector.predict(canvas(), conf=0.5, slice=256, overlap=0.25, merge="greedy")[0]
    assert sorted(result.boxes.tolist()) == sorted(SQUARES + [SLAB]) and result.labels.tolist() == [1, 1, 2]
    streamed = next(detector.stream(canvas(), conf=0.5, classes=["square"], slice=256, overlap=0.25))
    assert streamed.labels.tolist() == [1, 1, 1]  # NMS keeps the copy cut by the tile border
    with pytest.raises(ConfigError, match="slice overlap 1.5"):
        detector.predict(canvas(), slice=256, overlap=1.5)


@pytest.fixture
def small_objects_config(tmp_path) -> dict:
    """A COCO split of two canvases whose ground truth is the squares and the slab."""
    images, annotations = [], []
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), canvas())
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 1000, "height": 800})
        for j, (x1, y1, x2, y2) in enumerate(SQUARES + [SLAB]):
            annotations.append(
                {
                    "id": 10 * i + j + 1,
                    "image_id": i + 1,
                    "category_id": 2 if j == 2 else 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "slab"}]
    (tmp_path / "val.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return {
        "data": {"format": "coco", "root": str(tmp_path), "train": "val.json", "val": "val.json"},
        "train": {"workers": 0},
        "eval": {"plots": False},
    }


def test_eval_slice_keys_score_the_sliced_predictions(small_objects_config):
    detector = Detector(predict_batch=short_sighted, model_name="fake", class_names=["square", "slab"])
    plain = detector.evaluate(small_objects_config)
    assert plain["per_class_map50"]["square"] == 0 and plain["per_class_map50"]["slab"] == pytest.approx(1)
    assert "slicing" not in plain
    keys = {"eval.slice": 256, "eval.slice_overlap": 0.25, "eval.slice_merge": "greedy"}
    tiled = detector.evaluate(small_objects_config, **keys)
    assert tiled["per_class_map50"] == pytest.approx({"square": 1, "slab": 1}) and tiled["map"] == pytest.approx(1)
    assert tiled["slicing"] == SliceOptions(256, 0.25, "greedy").describe()
    cfg = load_config(
        None,
        [f"data.{k}={v}" for k, v in small_objects_config["data"].items()]
        + ["train.workers=0", "eval.slice=256", "eval.slice_overlap=0.25", "eval.slice_full_image=false"],
    )
    tiles_only = evaluate_config(short_sighted, cfg, class_names=["square", "slab"], source="fake")
    assert tiles_only["per_class_map50"]["square"] > 0 and tiles_only["per_class_map50"]["slab"] == 0


@pytest.mark.parametrize(
    "override, match",
    [
        ("eval.slice=-1", "eval.slice"),
        ("eval.slice=1", "eval.slice"),
        ("eval.slice_overlap=1", "eval.slice_overlap"),
        ("eval.slice_overlap=0.99", "eval.slice_overlap"),
        ("eval.slice_merge=soft", "eval.slice_merge"),
        ("eval.slice_merge_iou=0", "eval.slice_merge_iou"),
    ],
)
def test_eval_slice_keys_are_checked(override, match):
    with pytest.raises(ConfigError, match=f"'{match}'"):
        load_config(None, [override])
    assert load_config(None, []).eval.slice == 0  # off by default: evaluation unchanged


# -- the command line with the edge runtime alone ------------------------------------------------------------


def _predict_cli(*args: str) -> subprocess.CompletedProcess:
    code = BLOCK_TORCH + "from detect_ft.cli.main import main\nrc = main(sys.argv[1:])\n"
    code += "assert sys.modules['torch'] is None\nsys.exit(rc)\n"
    return run_python(code, "predict", *args, timeout=300)


def test_predict_cli_slices_an_onnx_model_without_torch(exported_onnx, tmp_path):
    from detect_ft.inference import EdgeDetector, read_image

    photos = sorted(exported_onnx["images"].glob("*.jpg"))[:4]
    grid = [read_image(p) for p in photos]
    big = np.concatenate([np.concatenate(grid[:2], 1), np.concatenate(grid[2:], 1)], 0)  # 2 x 2 photos
    cv2.imwrite(str(tmp_path / "big.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    model, out = str(exported_onnx["onnx"]), tmp_path / "out"
    # merge IoU 1 keeps every detection (NMS drops IoU > 1 only): the output is each tile's, shifted
    proc = _predict_cli(
        model,
        str(tmp_path / "big.jpg"),
        "--output",
        str(out),
        "--slice",
        "128",
        "--overlap",
        "0",
        "--no-full-image",
        "--merge-iou",
        "1",
        "--conf",
        "0.2",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "sliced inference: 128x128 tiles overlapping by 0, merged by class-wise NMS (IoU 1)" in proc.stdout
    height, width = read_image(tmp_path / "big.jpg").shape[:2]
    assert (height, width) == (192, 256)  # tiles by hand: x 0 and 128, y 0 and 64 (the last row moved back)
    edge, decoded, expected = EdgeDetector(model, threads=1, conf=0.2), read_image(tmp_path / "big.jpg"), []
    for x, y in [(0, 0), (128, 0), (0, 64), (128, 64)]:
        det = edge.predict(decoded[y : y + 128, x : x + 128])
        expected += [[*(np.asarray(box) + [x, y, x, y]), float(s)] for box, s in zip(det["boxes"], det["scores"])]
    rows = json.loads((out / "predictions.json").read_text())
    got = [
        [r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3], r["score"]] for r in rows
    ]
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(sorted(got), sorted(expected), atol=1e-3)
    # the defaults: the whole image too, class-wise NMS at IoU 0.5
    proc = _predict_cli(model, str(tmp_path / "big.jpg"), "--output", str(tmp_path / "out2"), "--slice", "128")
    assert proc.returncode == 0, proc.stderr
    assert "128x128 tiles overlapping by 0.2 plus the whole image, merged by class-wise NMS (IoU 0.5)" in proc.stdout
    assert (tmp_path / "out2" / "predictions.json").is_file()


def test_predict_cli_refuses_a_bad_slice_before_loading_the_model(tmp_path, capsys):
    from detect_ft.cli.main import main

    assert (
        main(
            [
                "predict",
                str(tmp_path / "missing.onnx"),
                str(tmp_path),
                "--output",
                str(tmp_path / "o"),
                "--slice",
                "256",
                "--overlap",
                "1.2",
            ]
        )
        != 0
    )
    assert "slice overlap 1.2" in capsys.readouterr().err
    for bad in (["--slice", "1"], ["--slice", "8", "--overlap", "0.99"]):
        args = ["predict", str(tmp_path / "missing.onnx"), str(tmp_path), "--output", str(tmp_path / "o"), *bad]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "slice size" in err[0] and ">= 64" in err[0]


@pytest.mark.usefixtures("one_thread")
def test_training_validates_as_the_eval_slice_keys_say(tiny_data, tmp_path):
    """With eval.slice set, the trainer's validation (which picks best.pt) runs sliced too, as eval does."""
    from detect_ft.checkpoint.format import read_checkpoint
    from detect_ft.engine.trainer import train

    run_dir = train(
        tiny_config(tiny_data, tmp_path / "run", "eval.slice=64", "eval.slice_overlap=0.25"), progress=False
    )
    metrics = read_checkpoint(run_dir / "checkpoints" / "last.pt")["metrics"]
    assert metrics["slicing"].startswith("sliced inference: 64x64 tiles overlapping by 0.25")
