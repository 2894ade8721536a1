"""The OpenVINO target: ``export --format openvino`` writes a verified fp32 IR whose detections are the ONNX
runtime's, ``Detector.load("model.xml")`` and ``detect-ft predict model.xml`` run it torch-free, ``--int8``
adds an NNCF INT8 IR gated against PyTorch, ``--batch N`` IRs run N images at once, ``streams=N`` runs N
infer requests on OpenVINO's CPU streams with the one-stream detections, and a missing
``openvino`` or ``nncf`` package is a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import BLOCK_TORCH, run_python

from detect_ft.api import Detector
from detect_ft.api.exporting import export_checkpoint
from detect_ft.cli.main import main
from detect_ft.data.image import read_image
from detect_ft.export import compare_detections
from detect_ft.inference import EdgeDetector
from detect_ft.inference.openvino_runtime import OpenVINODetector
from detect_ft.utils.errors import DetectFTError

# The INT8 exports run the CLI in a child process, as a user runs it (and NNCF stays out of the test process).
CLI = "import sys\nfrom detect_ft.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def openvino_ir(exported_onnx, tmp_path_factory) -> dict:
    """The session's exported checkpoint through ``detect-ft export --format openvino`` (parity-checked)."""
    out = tmp_path_factory.mktemp("openvino")
    report = out / "report.json"
    code = main(
        [
            "export",
            str(exported_onnx["checkpoint"]),
            "--output",
            str(out / "model.onnx"),
            "--format",
            "openvino",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    return {**exported_onnx, "xml": out / "model.xml", "report": json.loads(report.read_text())}


def test_export_writes_a_verified_fp32_ir_with_the_onnx_metadata(openvino_ir):
    xml = openvino_ir["xml"]
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml", "report.json"]
    report = openvino_ir["report"]
    assert report["format"] == "openvino" and report["output"] == str(xml)
    parity = report["openvino"]["parity"]
    assert parity["detections"]["matched"] == parity["detections"]["reference_detections"] > 0
    assert abs(parity["map_diff_points"]) <= 0.5
    ir, onnx = OpenVINODetector(xml), EdgeDetector(openvino_ir["onnx"])
    assert ir.metadata == onnx.metadata  # classes, thresholds, input spec, outputs
    text = xml.read_text()  # compress_to_fp16=False: fp32 weights, none stored as f16
    assert 'element_type="f32"' in text and 'element_type="f16"' not in text


def test_ir_detections_equal_onnx_runtime_per_image(openvino_ir):
    ir, onnx = OpenVINODetector(openvino_ir["xml"]), EdgeDetector(openvino_ir["onnx"])
    images = [read_image(record.image_path) for record in openvino_ir["val"].records]
    for image in images:
        reference, candidate = onnx.predict(image, conf=0.05), ir.predict(image, conf=0.05)
        agreement = compare_detections([reference], [candidate])
        assert agreement["matched"] == agreement["reference_detections"] == agreement["candidate_detections"]
        assert agreement["max_score_diff"] < 1e-3 and agreement["max_box_diff"] < 0.05
    batched = ir.predict_batch(images)
    assert [len(d["scores"]) for d in batched] == [len(ir.predict(im)["scores"]) for im in images]


def test_detector_load_xml_predicts_like_onnx(openvino_ir):
    ir, onnx = Detector.load(openvino_ir["xml"]), Detector.load(openvino_ir["onnx"])
    assert ir.class_names == onnx.class_names and ir.thresholds == onnx.thresholds
    assert "openvino" in repr(ir)
    image = read_image(openvino_ir["val"].records[0].image_path)
    (a,), (b,) = ir.predict(image, conf=0.05), onnx.predict(image, conf=0.05)
    assert a.names == b.names and len(a.boxes) > 0
    assert abs(a.boxes - b.boxes).max() < 0.05


def test_predict_cli_runs_the_ir_without_torch(openvino_ir, tmp_path):
    code = BLOCK_TORCH + "from detect_ft.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    out = tmp_path / "pred"
    done = run_python(code, "predict", str(openvino_ir["xml"]), str(openvino_ir["images"]), "--output", str(out))
    assert done.returncode == 0, done.stderr
    predictions = json.loads((out / "predictions.json").read_text())
    assert isinstance(predictions, list) and len(list(out.glob("*.jpg"))) + len(list(out.glob("*.png"))) > 0


def test_models_freed_in_any_order_leave_signals_deliverable(openvino_ir):
    # OpenVINO gives the compiling thread a signal stack of its own and puts back, when a model is freed, the
    # one it found, which may be a freed model's: a signal then killed the process (SIGCHLD while torch's
    # DataLoader watches it, Ctrl-C). Here: two models freed in the order they were made, then a child exits.
    code = (
        "import faulthandler, gc, signal, subprocess, sys\n"
        "from detect_ft.inference.openvino_runtime import OpenVINODetector\n"
        "faulthandler.enable()\n"
        "signal.signal(signal.SIGCHLD, lambda *_: None)\n"
        "first, second = OpenVINODetector(sys.argv[1]), OpenVINODetector(sys.argv[1])\n"
        "del first\n"
        "gc.collect()\n"
        "del second\n"
        "gc.collect()\n"
        "subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
        "print('signals still delivered')\n"
    )
    done = run_python(code, str(openvino_ir["xml"]))
    assert done.returncode == 0 and "signals still delivered" in done.stdout, (done.returncode, done.stderr[-500:])


def test_missing_openvino_is_one_line_naming_the_extra(openvino_ir, tmp_path):
    block = "import sys; sys.modules['openvino'] = None\nfrom detect_ft.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    hint = "pip install 'detect-ft[openvino]'"
    for args in (
        ["predict", str(openvino_ir["xml"]), str(openvino_ir["images"]), "--output", str(tmp_path / "p")],
        ["export", str(openvino_ir["checkpoint"]), "--output", str(tmp_path / "m.xml")],
    ):
        done = run_python(block, *args)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert hint in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "m.xml").exists()


def test_batch_ir_runs_batches_with_the_per_image_detections(openvino_ir, tmp_path):
    xml = tmp_path / "m.xml"
    assert main(["export", str(openvino_ir["checkpoint"]), "--output", str(xml), "--batch", "3"]) == 0
    batched, single = OpenVINODetector(xml), OpenVINODetector(openvino_ir["xml"])
    assert batched.batch == 3 and single.batch == 1
    images = [read_image(record.image_path) for record in openvino_ir["val"].records]
    images += images[:2]  # more images than one batch, the last batch short
    agreement = compare_detections(single.predict_batch(images), batched.predict_batch(images))
    assert agreement["matched"] == agreement["reference_detections"] == agreement["candidate_detections"] > 0
    assert agreement["max_score_diff"] < 1e-3 and agreement["max_box_diff"] < 0.05
    with pytest.raises(DetectFTError, match="batch 1 only"):
        export_checkpoint(openvino_ir["checkpoint"], tmp_path / "i.xml", int8=True, batch=2, format="openvino")
    assert not (tmp_path / "i.xml").exists()


def test_a_missing_or_foreign_ir_is_reported(openvino_ir, tmp_path):
    with pytest.raises(DetectFTError, match="not found"):
        OpenVINODetector(tmp_path / "absent.xml")
    import openvino as ov

    plain = ov.convert_model(str(openvino_ir["onnx"]))
    ov.save_model(plain, str(tmp_path / "plain.xml"))
    with pytest.raises(DetectFTError, match="no 'detect_ft' rt_info"):
        OpenVINODetector(tmp_path / "plain.xml")


def test_eval_scores_the_ir_as_the_onnx_model(openvino_ir):
    data = {"format": "coco", "root": str(openvino_ir["root"]), "train": "train.json", "val": "val.json"}
    config = {"data": {**data, "classes": list(openvino_ir["val"].class_names)}, "eval": {"plots": False}}
    ir = Detector.load(openvino_ir["xml"]).evaluate(config)
    onnx = Detector.load(openvino_ir["onnx"]).evaluate(config)
    assert ir["map"] == pytest.approx(onnx["map"], abs=0.005) and ir["map"] > 0


def test_an_ir_detector_cannot_train(openvino_ir):
    with pytest.raises(DetectFTError, match="is an OpenVINO model: it can predict and evaluate but not train"):
        Detector.load(openvino_ir["xml"]).train()


@pytest.fixture(scope="module")
def openvino_int8(openvino_ir, tmp_path_factory) -> dict:
    """The checkpoint through ``export --format openvino --int8`` with the gate wide open (this random-init
    model calibrated on 2 images loses far more than the default 1 AP point, as its ONNX INT8 does)."""
    pytest.importorskip("nncf")
    out = tmp_path_factory.mktemp("openvino_int8")
    report = out / "report.json"
    args = ["export", str(openvino_ir["checkpoint"]), "--output", str(out / "model.xml"), "--int8"]
    done = run_python(CLI, *args, "export.int8_max_map_drop=100", "--json", str(report), timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(report.read_text())
    return {**openvino_ir, "int8_xml": out / "model.int8.xml", "int8_report": report, "stdout": done.stdout}


def test_int8_ir_is_written_gated_and_runs_like_an_ir(openvino_int8):
    xml = openvino_int8["int8_xml"]
    assert sorted(p.name for p in xml.parent.iterdir()) == [
        "model.bin",
        "model.int8.bin",
        "model.int8.xml",
        "model.xml",
        "report.json",
    ]
    assert "FakeQuantize" in xml.read_text() and "FakeQuantize" not in xml.with_name("model.xml").read_text()
    assert "Statistics collection" not in openvino_int8["stdout"], "NNCF's progress bars belong on stderr"
    assert "mAP50" in openvino_int8["stdout"], "the report table stays on stdout"
    int8 = openvino_int8["int8_report"]["int8"]
    assert int8["output"] == str(xml) and int8["gate"] == "passed" and int8["calibration_images"] > 0
    assert int8["map_diff_points"] >= -100 and int8["speed"]["speedup"] > 0
    detector = OpenVINODetector(xml)
    assert detector.metadata["quantization"]["calibration_images"] == int8["calibration_images"]
    fp32 = OpenVINODetector(xml.with_name("model.xml")).metadata
    assert {k: v for k, v in detector.metadata.items() if k != "quantization"} == fp32
    image = read_image(openvino_int8["val"].records[0].image_path)
    (result,) = Detector.load(xml).predict(image, conf=0.0)
    assert result.boxes.shape[1:] == (4,) and len(result.boxes) > 0


def test_eval_scores_the_int8_ir(openvino_int8):
    data = {"format": "coco", "root": str(openvino_int8["root"]), "train": "train.json", "val": "val.json"}
    config = {"data": {**data, "classes": list(openvino_int8["val"].class_names)}, "eval": {"plots": False}}
    metrics = Detector.load(openvino_int8["int8_xml"]).evaluate(config)
    assert metrics["map"] == pytest.approx(openvino_int8["int8_report"]["int8"]["map"], abs=0.005)


def test_int8_ir_beyond_the_allowed_drop_is_refused(openvino_int8, tmp_path):
    # a zero allowed drop: the INT8 IR of this random-init model scores below PyTorch (the fixture's
    # report says by how much), so the gate must refuse it and keep only the verified fp32 IR
    assert openvino_int8["int8_report"]["int8"]["map_diff_points"] < 0
    args = ["export", str(openvino_int8["checkpoint"]), "--output", str(tmp_path / "m.xml"), "--int8"]
    captured = run_python(CLI, *args, "export.int8_max_map_drop=0", "--json", str(tmp_path / "r.json"), timeout=600)
    assert captured.returncode != 0
    error = [line for line in captured.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "INT8 OpenVINO model refused" in error[0] and "m.int8.xml was not written" in error[0]
    assert "--int8-keep-anyway" in error[0] and "INT8 model REFUSED" in captured.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "r.json"]
    assert json.loads((tmp_path / "r.json").read_text())["int8"]["gate"] == "refused"


def test_missing_nncf_is_one_line_naming_the_extra(openvino_ir, tmp_path):
    block = (
        "import sys; sys.modules['nncf'] = None\nfrom detect_ft.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    done = run_python(block, "export", str(openvino_ir["checkpoint"]), "--output", str(tmp_path / "m.xml"), "--int8")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "nncf" in done.stderr and "pip install 'detect-ft[openvino]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(tmp_path.iterdir())


def test_openvino_streams_equal_one_stream_per_image_in_order(openvino_ir):
    images = [read_image(record.image_path) for record in openvino_ir["val"].records]
    images += [image[: image.shape[0] // 2, : image.shape[1] // 2].copy() for image in images]  # a second size
    images = [image for pair in zip(images[: len(images) // 2], images[len(images) // 2 :]) for image in pair]
    # one thread per stream in both, so each request runs with the same kernels and threads
    single = OpenVINODetector(openvino_ir["xml"], threads=1)
    double = OpenVINODetector(openvino_ir["xml"], threads=2, streams=2)
    assert double.streams == 2 and double.compiled.get_property("NUM_STREAMS") == 2
    reference = single.predict_batch(images)
    assert sum(len(r["scores"]) for r in reference) > 0
    for ref, cand in zip(reference, double.predict_batch(images), strict=True):
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(ref[key], cand[key])
    for bad in (0, 2.0):
        with pytest.raises(DetectFTError, match="streams="):
            OpenVINODetector(openvino_ir["xml"], streams=bad)
