"""Parallel streams in the edge runtime: ``EdgeDetector(..., streams=N)`` opens N onnxruntime sessions and
``predict_batch`` spreads the images (or a batch graph's same-size groups) over them; every image's
detections equal the one-stream runtime's exactly, in the images' order. ``Detector.load(streams=)`` and
``detect-ft predict --streams`` pass it on. (OpenVINO's streams: tests/test_openvino.py.)"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import one_error_line

from detect_ft.api import Detector
from detect_ft.data.image import read_image
from detect_ft.inference import EdgeDetector
from detect_ft.utils.errors import ConfigError, DetectFTError

KEYS = ("boxes", "scores", "labels")


def many_sizes(exported_onnx) -> list[np.ndarray]:
    """The data's images interleaved with downscaled copies of two sizes: 3 size groups, more runs than streams."""
    images = [read_image(p) for p in sorted(exported_onnx["images"].glob("*.jpg"))]
    out = []
    for i, image in enumerate(images):
        scale = (1.0, 0.75, 0.5)[i % 3]
        size = (max(32, int(image.shape[1] * scale)), max(32, int(image.shape[0] * scale)))
        out += [image, cv2.resize(image, size)]
    assert len({img.shape for img in out}) >= 2 and len(out) > 3
    return out


def assert_identical(reference: list[dict], candidate: list[dict]) -> None:
    """Per image, in order: bit-identical boxes, scores and labels, and the same names."""
    assert len(reference) == len(candidate)
    for ref, cand in zip(reference, candidate):
        for key in KEYS:
            np.testing.assert_array_equal(ref[key], cand[key])
        assert ref["names"] == cand["names"]


def test_two_streams_equal_one_stream_per_image_in_order(exported_onnx):
    images = many_sizes(exported_onnx)
    one = EdgeDetector(exported_onnx["onnx"], threads=1)
    two = EdgeDetector(exported_onnx["onnx"], threads=2, streams=2)
    assert two.streams == 2 and len(two.sessions) == 2 and one.streams == 1
    # threads are split over the streams: each session of `two` runs as `one`'s single session does
    assert [s.get_session_options().intra_op_num_threads for s in two.sessions] == [1, 1]
    reference = one.predict_batch(images)
    assert sum(len(r["scores"]) for r in reference) > 0
    assert_identical(reference, two.predict_batch(images))
    assert_identical(reference[::-1], two.predict_batch(images[::-1]))
    assert_identical(reference[:1], [two.predict(images[0])])
    assert two.predict_batch([]) == []
    assert "streams=2" in repr(two)


def test_streams_spread_a_batch_graphs_groups(exported_onnx, tmp_path):
    path = tmp_path / "m.b2.onnx"
    Detector.load(exported_onnx["checkpoint"]).export(path, batch=2, verify=False)
    images = many_sizes(exported_onnx)
    one, three = EdgeDetector(path, threads=1), EdgeDetector(path, threads=3, streams=3)
    assert three.batch == 2 and len(three.sessions) == 3
    assert_identical(one.predict_batch(images), three.predict_batch(images))


def test_detector_load_passes_streams_and_checks_them(exported_onnx):
    images = many_sizes(exported_onnx)
    single = Detector.load(exported_onnx["onnx"], device="cpu", threads=1)
    double = Detector.load(exported_onnx["onnx"], device="cpu", threads=2, streams=2)
    reference = [r.scores for r in single.predict(images, conf=0.0, batch=4)]
    for ref, result in zip(reference, double.predict(images, conf=0.0, batch=4), strict=True):
        np.testing.assert_array_equal(ref, result.scores)
    with pytest.raises(ConfigError, match="exported models"):
        Detector.load(exported_onnx["checkpoint"], streams=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_a_bad_streams_value_is_one_line(exported_onnx, bad):
    with pytest.raises(DetectFTError, match=r"streams=") as caught:
        EdgeDetector(exported_onnx["onnx"], streams=bad)
    assert "\n" not in str(caught.value)


def test_cli_predict_streams_writes_the_one_stream_outputs(exported_onnx, run_cli, tmp_path):
    rows = {}
    for name, threads, streams in (("one", "1", "1"), ("two", "2", "2")):
        args = ("--output", tmp_path / name, "--batch", "4", "--threads", threads, "--streams", streams)
        code, out, _ = run_cli("predict", exported_onnx["onnx"], exported_onnx["images"], *args)
        assert code == 0, out
        rows[name] = json.loads((tmp_path / name / "predictions.json").read_text())
        rows[name + " files"] = {p.name: p.read_bytes() for p in (tmp_path / name).glob("*.jpg")}
    assert rows["one"] and rows["one files"], "nothing to compare"
    assert rows["one"] == rows["two"] and rows["one files"] == rows["two files"]
    code, _, err = run_cli(
        "predict", exported_onnx["onnx"], exported_onnx["images"], "--output", tmp_path / "x", "--streams", "0"
    )
    assert code != 0 and "--streams 0" in one_error_line(err)
