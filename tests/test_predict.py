"""``detect-ft predict``: images, folders and videos, with an ONNX model or a checkpoint."""

from __future__ import annotations

import json

import cv2
import numpy as np
from helpers import CATEGORY_IDS, constant_onnx, noise_image

from detect_ft.cli.main import main
from detect_ft.export import compare_detections
from detect_ft.inference import EdgeDetector, read_image


def _results(folder):
    return json.loads((folder / "predictions.json").read_text())


def test_folder_with_onnx_writes_annotated_images_and_coco_results(exported_onnx, tmp_path):
    assert (
        main(
            [
                "predict",
                str(exported_onnx["onnx"]),
                str(exported_onnx["images"]),
                "--output",
                str(tmp_path),
                "--conf",
                "0.5",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in exported_onnx["images"].glob("*.jpg"))
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == names
    results = _results(tmp_path)
    assert results and {r["file_name"] for r in results} <= set(names)
    assert {r["image_id"] for r in results} <= set(range(1, len(names) + 1)) and {
        r["category_id"] for r in results
    } <= set(CATEGORY_IDS)
    assert all(r["score"] >= 0.5 and len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in results)
    first = [r for r in results if r["file_name"] == names[0]]
    expected = EdgeDetector(exported_onnx["onnx"], conf=0.5).predict(read_image(exported_onnx["images"] / names[0]))
    assert len(first) == len(expected["scores"])
    x, y, w, h = first[0]["bbox"]
    np.testing.assert_allclose([x, y, x + w, y + h], expected["boxes"][0], atol=1e-3)
    annotated = read_image(tmp_path / names[0])
    assert annotated.shape == read_image(exported_onnx["images"] / names[0]).shape
    assert not np.array_equal(annotated, read_image(exported_onnx["images"] / names[0]))  # boxes were drawn


def test_checkpoint_and_onnx_give_the_same_detections(exported_onnx, tmp_path):
    image = sorted(exported_onnx["images"].glob("*.jpg"))[0]
    for model, out in ((exported_onnx["checkpoint"], "pt"), (exported_onnx["onnx"], "onnx")):
        assert main(["predict", str(model), str(image), "--output", str(tmp_path / out), "--conf", "0.3"]) == 0
    as_dets = lambda rs: {
        "boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in rs)]).reshape(-1, 4),
        "scores": np.array([r["score"] for r in rs]),
        "labels": np.array([CATEGORY_IDS.index(r["category_id"]) + 1 for r in rs]),
    }
    pt, ox = as_dets(_results(tmp_path / "pt")), as_dets(_results(tmp_path / "onnx"))
    stats = compare_detections([pt], [ox])
    assert stats["reference_detections"] > 0 and stats["match_rate"] == 1.0


def test_video_becomes_an_annotated_video(exported_onnx, tmp_path):
    frames = [read_image(p) for p in sorted(exported_onnx["images"].glob("*.jpg"))]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    assert main(["predict", str(exported_onnx["onnx"]), str(video), "--output", str(out)]) == 0
    capture = cv2.VideoCapture(str(out / "clip.pred.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == len(frames)
    results = _results(out)
    assert {r["image_id"] for r in results} <= set(range(1, len(frames) + 1)) and results
    assert {r["file_name"] for r in results} == {"clip.mp4"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_bad_sources_are_reported(exported_onnx, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert (
        main(["predict", str(exported_onnx["onnx"]), str(tmp_path / "notes.txt"), "--output", str(tmp_path / "o")]) == 2
    )
    assert "unknown file type '.txt'" in capsys.readouterr().err
    assert (
        main(["predict", str(exported_onnx["onnx"]), str(tmp_path / "nope.jpg"), "--output", str(tmp_path / "o")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(exported_onnx["onnx"]), str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "no readable images" in capsys.readouterr().err


def test_a_pooled_class_threshold_is_said_to_be_pooled(tmp_path, run_cli):
    """A class without a true positive in validation (eval: n/a) takes the all-class threshold; predict
    says so instead of printing it as the class's own."""
    from detect_ft import Detector

    model = constant_onnx(tmp_path / "m.onnx", thresholds=[0.5, 0.31], pooled_thresholds=["cat"])
    code, out, _ = run_cli("predict", model, noise_image(tmp_path / "a.jpg"), "--output", tmp_path / "out")
    assert code == 0
    assert "(cat 0.50 (pooled over all classes: n/a in eval, no true positive of its own), dog 0.31)" in out
    checkpoint_like = Detector(
        predict_batch=lambda images: [],
        model_name="fake",
        class_names=["cat", "dog"],
        thresholds=[0.5, 0.31],
        metadata={"metrics": {"thresholds": {"cat": None, "dog": 0.31}}},  # as a checkpoint's validation stores them
    )
    _, note = checkpoint_like.confidence()
    assert "cat 0.50 (pooled over all classes" in note and "dog 0.31)" in note


def test_export_records_which_thresholds_are_pooled(exported_onnx, tmp_path, run_cli):
    import torch

    checkpoint = torch.load(exported_onnx["checkpoint"], map_location="cpu", weights_only=True)
    checkpoint["metrics"]["thresholds"]["square"] = None  # no true positive of squares in validation
    torch.save(checkpoint, tmp_path / "pooled.pt")
    code, out, _ = run_cli("export", tmp_path / "pooled.pt", "--output", tmp_path / "m.onnx", "--no-verify")
    assert code == 0 and "square 0." in out and "(pooled over all classes" in out
    assert EdgeDetector(tmp_path / "m.onnx").metadata["pooled_thresholds"] == ["square"]
