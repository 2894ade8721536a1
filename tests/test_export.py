"""ONNX export: checker, metadata, parity with PyTorch (through the CLI), INT8, the parity gate, and the
zero/one-detection cases that break naive exports of torchvision detectors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import CATEGORY_IDS, CLASSES, FAST_MODELS, exported_model, separated_model, synthetic_root

from detect_ft._version import __version__
from detect_ft.cli.main import main
from detect_ft.data.image import read_image
from detect_ft.evaluation.evaluator import torch_predictor
from detect_ft.export import compare_detections, export_detector, pair_detections
from detect_ft.export.onnx_export import build_metadata, export_onnx
from detect_ft.inference import EdgeDetector, runtime
from detect_ft.utils.errors import DetectFTError

# The session's exported model is in the fast tier; the other fast-to-export models run with the slow tests.
FAST_TIER_FIRST = [name if i == 0 else pytest.param(name, marks=pytest.mark.slow) for i, name in enumerate(FAST_MODELS)]


@pytest.fixture(scope="module", params=FAST_TIER_FIRST)
def exported(request, tmp_path_factory):
    """conftest's ``exported_onnx`` for each fast model: the session's own for ssdlite320_mobilenet_v3_large,
    exported here the same way for the others."""
    if request.param == "ssdlite320_mobilenet_v3_large":
        return request.getfixturevalue("exported_onnx")
    tmp_path = tmp_path_factory.mktemp(request.param)
    return exported_model(tmp_path, request.param, overrides=("export.int8_max_map_drop=100",))


def test_export_writes_checked_onnx_with_metadata(exported):
    proto = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(proto)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["detect_ft"])
    assert meta["model_name"] == exported["name"] and meta["detect_ft_version"] == __version__
    assert meta["class_names"] == CLASSES and meta["category_ids"] == CATEGORY_IDS
    assert meta["input"]["color"] == "RGB" and meta["input"]["scale"] == pytest.approx(1 / 255)
    assert meta["input"]["min_size"] == 128 and meta["input"]["max_size"] in (128, 160)
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels"]
    assert not list(exported["onnx"].parent.glob(".*.tmp")), "temporary files left behind"


def test_onnx_matches_pytorch_on_validation_images(exported):
    """Independent of the export's own check: every PyTorch detection has an ONNX twin."""
    images = [read_image(r.image_path) for r in exported["val"].records]
    first = read_image(exported["val"].records[0].image_path)
    # Sizes where float32 size arithmetic in the graph would round differently from eager PyTorch.
    images += [np.ascontiguousarray(np.resize(first, (h, w, 3))) for h, w in ((70, 100), (100, 70), (33, 77))]
    predict = torch_predictor(exported["model"], "cpu")
    # One image per call: torchvision pads a mixed-size batch to a common size, which changes R-CNN results.
    reference = [predict([image])[0] for image in images]
    candidate = EdgeDetector(exported["onnx"]).predict_batch(images)
    stats = compare_detections(reference, candidate)
    assert stats["reference_detections"] > 50, stats
    assert stats["match_rate"] == 1.0 and stats["candidate_detections"] == stats["reference_detections"], stats
    assert stats["max_score_diff"] < 1e-3 and stats["max_box_diff"] < 0.1


def test_int8_model_is_quantized_and_runs(exported):
    int8 = EdgeDetector(exported["int8"])
    assert int8.metadata["quantization"]["format"] == "QDQ" and int8.class_names == CLASSES
    ops = {node.op_type for node in onnx.load(str(exported["int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    result = int8.predict(read_image(exported["val"].records[0].image_path))
    assert result["boxes"].shape[1] == 4 and set(result["labels"].tolist()) <= {1, 2}


@pytest.mark.slow
def test_parity_gate_fails_and_leaves_no_file(exported_onnx, tmp_path, monkeypatch):
    model, val = exported_onnx["model"], exported_onnx["val"]
    original = runtime.preprocess
    # A runtime that mirrors the image: boxes land on the wrong side, as with a wrong preprocessing step.
    monkeypatch.setattr(runtime, "preprocess", lambda image, spec: original(np.ascontiguousarray(image[:, ::-1]), spec))
    output = tmp_path / "out" / "model.onnx"
    with pytest.raises(DetectFTError, match=r"export\.max_map_drop=0\.5"):
        export_detector(model, output, model_name=exported_onnx["name"], class_names=CLASSES, val_dataset=val)
    assert not output.exists() and not list(output.parent.iterdir())


def _set_score_thresh(model, value: float) -> None:
    owner = model.roi_heads if hasattr(model, "roi_heads") else model
    owner.score_thresh = value


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST_TIER_FIRST)
def test_zero_and_exactly_one_detection_run(tmp_path, name):
    """Pick a score threshold (from the PyTorch scores, with margins) at which one image keeps exactly one
    detection and another keeps none, bake it into the graph, and run both through onnxruntime."""
    model = separated_model(name)
    _set_score_thresh(model, 0.0)
    root = synthetic_root(tmp_path, num_train=0, num_val=4)
    candidates = [read_image(p) for p in sorted((root / "images").glob("*.jpg"))]
    candidates += [np.full((96, 128, 3), v, np.uint8) for v in (0, 128, 255)]
    # Two leading zeros stand in for "no detection" (an image may have none even at threshold 0).
    scores = [
        np.concatenate([np.sort(out["scores"])[::-1], [0.0, 0.0]]) for out in torch_predictor(model, "cpu")(candidates)
    ]
    margin = 0.01
    lowest = int(np.argmin([s[0] for s in scores]))
    choice = None
    for i, s in enumerate(scores):
        low, high = max(s[1], scores[lowest][0]) + margin, s[0] - margin
        if i != lowest and low < high:
            choice = (i, (low + high) / 2)
            break
    assert choice is not None, "no image/threshold pair with clear margins; change the seed"
    one, thresh = choice
    _set_score_thresh(model, float(thresh))
    path = tmp_path / "model.onnx"
    export_onnx(model, path, metadata=build_metadata(model, model_name=name, class_names=CLASSES, opset=17))
    detector = EdgeDetector(path)
    got_one, got_zero = detector.predict_batch([candidates[one], candidates[lowest]])
    assert len(got_one["scores"]) == 1 and len(got_zero["scores"]) == 0
    assert got_one["boxes"].shape == (1, 4) and got_zero["boxes"].shape == (0, 4)
    ref = torch_predictor(model, "cpu")([candidates[one]])[0]
    i, j = pair_detections(ref, got_one)
    assert len(i) == 1 and abs(float(ref["scores"][0] - got_one["scores"][0])) < 1e-4


def test_pair_detections_pairs_by_label_and_iou():
    ref = {
        "boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32),
        "scores": np.array([0.9, 0.8]),
        "labels": np.array([1, 2]),
    }
    cand = {
        "boxes": np.array([[20, 20, 40, 40.1], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32),
        "scores": np.array([0.8, 0.9, 0.1]),
        "labels": np.array([2, 2, 1]),
    }
    i, j = pair_detections(ref, cand)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (1, 0)]
    stats = compare_detections([ref], [cand])
    assert stats["matched"] == 2 and stats["max_score_diff"] == pytest.approx(0.8)
    assert stats["max_box_diff"] == pytest.approx(0.1, abs=1e-4)
    point = {"boxes": np.array([[5, 5, 5, 5]], np.float32), "scores": np.array([0.5]), "labels": np.array([1])}
    assert compare_detections([point], [point])["matched"] == 1  # zero-area boxes have no IoU


@pytest.mark.slow
def test_export_without_val_split_names_the_fix(exported_onnx, tmp_path, capsys):
    checkpoint = exported_onnx["checkpoint"]
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "m.onnx"), "data.val="]) == 2
    err = capsys.readouterr().err
    assert "data.val" in err and "export.verify=false" in err
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "m.onnx"), "--no-verify"]) == 0
    assert EdgeDetector(tmp_path / "m.onnx").metadata["source_checkpoint"] == str(checkpoint)


# --- INT8: the accuracy gate, the keep-anyway flag, the quantisation options ------------------------


# Calibrating on flat black images gives every activation a range of ~0, so INT8 clips everything: a
# deliberately bad calibration that loses (nearly) the whole mAP.
BAD_CALIBRATION = [np.zeros((96, 128, 3), np.uint8)] * 2


@pytest.mark.slow
def test_int8_gate_refuses_a_lossy_model_and_leaves_no_file(exported_onnx, tmp_path):
    from detect_ft.cli.export_cmd import format_report
    from detect_ft.export.pipeline import Int8RefusedError

    name, model, val = exported_onnx["name"], exported_onnx["model"], exported_onnx["val"]
    output = tmp_path / "out" / "model.onnx"
    with pytest.raises(
        Int8RefusedError,
        match=r"INT8 model refused: its mAP .* AP points below .*int8_max_map_drop=1\.0.*int8_keep_anyway=True",
    ) as info:
        export_detector(
            model,
            output,
            model_name=name,
            class_names=CLASSES,
            val_dataset=val,
            int8=True,
            calib_images=BAD_CALIBRATION,
            extra_metadata={"thresholds": [0.4, 0.5], "pooled_thresholds": ["square"]},
        )
    assert "\n" not in str(info.value)
    assert output.exists(), "the verified fp32 model stays"
    assert sorted(p.name for p in output.parent.iterdir()) == ["model.onnx"], "no INT8 or temporary file left"
    int8 = info.value.report["int8"]
    assert int8["gate"] == "refused" and int8["map_diff_points"] < -1.0
    text = format_report(info.value.report)
    assert "INT8 model REFUSED" in text
    # the fp32 file it kept holds the thresholds, and the report of a refused INT8 model says so too
    assert EdgeDetector(output).metadata["thresholds"] == [0.4, 0.5] and "no validated" not in text
    assert "per class (circle 0.40, square 0.50 (pooled over all classes: n/a in eval" in text


@pytest.mark.slow
def test_int8_keep_anyway_keeps_it_with_a_warning(exported_onnx, tmp_path):
    from detect_ft.cli.export_cmd import format_report

    name, model, val = exported_onnx["name"], exported_onnx["model"], exported_onnx["val"]
    output = tmp_path / "model.onnx"
    report = export_detector(
        model,
        output,
        model_name=name,
        class_names=CLASSES,
        val_dataset=val,
        int8=True,
        calib_images=BAD_CALIBRATION,
        int8_keep_anyway=True,
    )
    assert report["int8"]["gate"] == "kept anyway" and (tmp_path / "model.int8.onnx").exists()
    text = format_report(report)
    assert "WARNING: INT8 model KEPT DESPITE" in text and "--int8-keep-anyway" in text
    # measured once: the speed-up line is the ratio of the p50s the table shows
    speed = report["int8"]["speed"]
    fp32, int8 = report["parity"]["onnx"]["latency"]["p50_ms"], report["int8"]["latency"]["p50_ms"]
    assert (speed["fp32_p50_ms"], speed["int8_p50_ms"]) == (fp32, int8) and speed["speedup"] == fp32 / int8
    rows = {name: line for line in text.splitlines() for name in ("onnx fp32", "onnx int8") if line.startswith(name)}
    assert f" {fp32:.1f}  " in rows["onnx fp32"] and f" {int8:.1f}  " in rows["onnx int8"]
    assert f"{fp32 / int8:.2f}x" in text and f"p50 {int8:.1f} ms INT8 vs {fp32:.1f} ms fp32" in text
    assert "over the 4 validation images" in text


@pytest.mark.slow
def test_int8_gate_through_the_cli(exported_onnx, tmp_path, capsys, monkeypatch):
    from detect_ft.api import exporting as export_api

    checkpoint = exported_onnx["checkpoint"]
    monkeypatch.setattr(export_api, "calibration_images", lambda dataset, count: list(BAD_CALIBRATION))
    out = tmp_path / "out" / "m.onnx"
    report_json = tmp_path / "report.json"
    assert main(["export", str(checkpoint), "--output", str(out), "--int8", "--json", str(report_json)]) == 2
    captured = capsys.readouterr()
    error = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "INT8 model refused" in error[0] and "AP points below" in error[0]
    assert "--int8-keep-anyway" in error[0]
    assert "INT8 model REFUSED" in captured.out and json.loads(report_json.read_text())["int8"]["gate"] == "refused"
    assert out.exists() and not (tmp_path / "out" / "m.int8.onnx").exists()
    assert main(["export", str(checkpoint), "--output", str(out), "--int8", "--int8-keep-anyway"]) == 0
    assert "WARNING: INT8 model KEPT DESPITE" in capsys.readouterr().out
    assert (tmp_path / "out" / "m.int8.onnx").exists()
    # Without a validation split the INT8 model cannot be gated, and the report says so.
    (tmp_path / "out" / "m.int8.onnx").unlink()
    assert main(["export", str(checkpoint), "--output", str(out), "--int8", "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: the INT8 model was NOT CHECKED" in printed and "10 alternating calls on one" in printed
    assert main(["export", str(checkpoint), "--output", str(out), "--int8-keep-anyway"]) == 2
    assert "only applies with --int8" in capsys.readouterr().err


def test_int8_slower_than_fp32_is_a_loud_line():
    from detect_ft.cli.export_cmd import _int8_lines

    method = "batch-1 calls over the 4 validation images, one pass per model, as in the table"
    speed = {"fp32_p50_ms": 10.0, "int8_p50_ms": 12.5, "speedup": 0.8, "method": method, "cpu": "AVX2, no VNNI"}
    lines = _int8_lines({"gate": "passed", "map_diff_points": -0.2, "max_map_drop": 1.0, "speed": speed})
    assert any(line.startswith("WARNING: INT8 is SLOWER than fp32") and "0.80x" in line for line in lines)
    faster = _int8_lines(
        {
            "gate": "passed",
            "map_diff_points": -0.2,
            "max_map_drop": 1.0,
            "speed": {**speed, "int8_p50_ms": 5.0, "speedup": 2.0},
        }
    )
    assert not any("WARNING" in line for line in faster) and any(
        "speed-up vs fp32 onnxruntime: 2.00x" in line for line in faster
    )


def _weight_is_float(graph, node) -> bool:
    """True when the node's weight input is a float initializer (not the output of a DequantizeLinear)."""
    initializers = {init.name: init for init in graph.initializer}
    weight = node.input[1]
    return weight in initializers and initializers[weight].data_type == onnx.TensorProto.FLOAT


@pytest.fixture(scope="module")
def lite0_onnx(tmp_path_factory):
    """An fp32 ``ssdlite320_efficientnet_lite0`` graph (spread-out random weights) for the INT8 option tests
    to quantise (read-only: they write their variants elsewhere)."""
    name = "ssdlite320_efficientnet_lite0"
    model = separated_model(name)
    path = tmp_path_factory.mktemp("lite0") / "model.onnx"
    export_onnx(model, path, metadata=build_metadata(model, model_name=name, class_names=CLASSES, opset=17))
    return path


@pytest.mark.slow
def test_int8_excluded_nodes_stay_float(lite0_onnx, tmp_path):
    from detect_ft.export.quantize import Int8Options, quantize_int8

    path = lite0_onnx
    calib = [read_image(p) for p in sorted((synthetic_root(tmp_path, num_train=0, num_val=2) / "images").glob("*.jpg"))]
    info = quantize_int8(path, tmp_path / "head.int8.onnx", calib, Int8Options(exclude=("head", "first")))
    graph = onnx.load(str(tmp_path / "head.int8.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    head = [n for n in convs if "/model/head/" in n.name]
    assert head and all(_weight_is_float(graph, n) for n in head)
    assert _weight_is_float(graph, convs[0]) and "conv_stem" in convs[0].name
    body = [n for n in convs[1:] if "/model/head/" not in n.name]
    assert body and not any(_weight_is_float(graph, n) for n in body), "the rest is quantised"
    excluded = set(info["excluded_nodes"])
    assert {n.name for n in head} | {convs[0].name} <= excluded
    assert all("/model/head/" in n for n in excluded - {convs[0].name}), "head: its Clips too, nothing else"
    assert (
        EdgeDetector(tmp_path / "head.int8.onnx").metadata["quantization"]["excluded_nodes"] == info["excluded_nodes"]
    )
    # "last": only the convolutions that produce the head outputs (12 for six SSDLite levels).
    last = quantize_int8(path, tmp_path / "last.int8.onnx", calib, Int8Options(exclude=("last",)))["excluded_nodes"]
    assert len(last) == 12 and all("/model/head/" in n and n.endswith("1/Conv") for n in last)
    with pytest.raises(DetectFTError, match="matches no quantisable node"):
        quantize_int8(path, tmp_path / "x.int8.onnx", calib, Int8Options(exclude=("no_such_layer",)))
    with pytest.raises(DetectFTError, match="export.int8_calibration='kl'"):
        Int8Options(calibration="kl")


@pytest.mark.slow
def test_int8_fused_ops_remove_the_float_round_trips(lite0_onnx, tmp_path):
    """ops="fused" folds ReLU6 (Clip) into the convolutions and quantises residual Adds; "conv" leaves a
    Dequantize -> Clip -> Quantize after every convolution. qoperator writes QLinearConv nodes itself.
    Post-processing (box decoding Adds/Clips) stays float with either."""
    from detect_ft.export.quantize import Int8Options, quantize_int8

    path = lite0_onnx
    calib = [np.full((96, 128, 3), v, np.uint8) for v in (60, 180)]
    counts = {}
    for ops in ("conv", "fused"):
        quantize_int8(path, tmp_path / f"{ops}.onnx", calib, Int8Options(ops=ops))
        graph = onnx.load(str(tmp_path / f"{ops}.onnx")).graph
        counts[ops] = {op: sum(n.op_type == op for n in graph.node) for op in ("Clip", "QuantizeLinear", "Add")}
        producers = {o: n for n in graph.node for o in n.output}
        if ops == "fused":  # the TF-"same" Pads of stride-2 blocks run on uint8, no Shape reads a DequantizeLinear
            assert not [
                n
                for n in graph.node
                if n.op_type in ("Pad", "Shape")
                and n.input[0] in producers
                and producers[n.input[0]].op_type == "DequantizeLinear"
            ]
        # Box decoding (after the head) is untouched: no float Add there reads a DequantizeLinear output.
        decode = [
            n for n in graph.node if n.op_type == "Add" and "/model/head/" not in n.name and "backbone" not in n.name
        ]
        assert all(
            producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for n in decode for i in n.input
        )
    assert (
        counts["fused"]["Clip"] < counts["conv"]["Clip"]
        and counts["fused"]["QuantizeLinear"] < counts["conv"]["QuantizeLinear"]
    )
    quantize_int8(path, tmp_path / "qop.onnx", calib, Int8Options(format="qoperator"))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "qop.onnx")).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    reference = EdgeDetector(path).predict(calib[1])
    for variant in ("conv", "fused", "qop"):
        assert EdgeDetector(tmp_path / f"{variant}.onnx").predict(calib[1])["boxes"].shape[1] == 4
    assert reference["boxes"].shape[1] == 4


def test_simplify_qdq_is_exact():
    """DequantizeLinear -> Pad(0) -> QuantizeLinear becomes a uint8 Pad by the zero point and Shape reads
    the quantised tensor; onnxruntime gives the same outputs before and after."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from detect_ft.export.quantize import simplify_qdq

    inits = [
        helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]),
        helper.make_tensor("zp", TensorProto.UINT8, [], [7]),
        helper.make_tensor("s2", TensorProto.FLOAT, [], [0.05]),
        helper.make_tensor("zp2", TensorProto.UINT8, [], [7]),
        helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 0, 0, 0, 2, 1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xf"]),
        helper.make_node("Pad", ["xf", "pads", "zero"], ["pf"]),
        helper.make_node("QuantizeLinear", ["pf", "s2", "zp2"], ["y"]),
        helper.make_node("Shape", ["xf"], ["shape"]),
        helper.make_node("DequantizeLinear", ["y", "s", "zp"], ["yf"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 3, 3])],
        [
            helper.make_tensor_value_info("yf", TensorProto.FLOAT, [1, 2, 6, 4]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [4]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).integers(0, 256, (1, 2, 3, 3), dtype=np.uint8)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    before = run(model)
    assert simplify_qdq(model.graph) == {"pad": 1, "shape": 1}
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 0 and ops.count("DequantizeLinear") == 1, ops  # only the output's
    after = run(model)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_same_padded_convolution_exports_as_one_conv_with_constant_pads(tmp_path):
    import onnxruntime as ort
    import torch
    from timm.layers import Conv2dSame

    from detect_ft.export.static_padding import StaticSameConv2d

    torch.manual_seed(0)
    for kernel, stride, bias in ((3, 2, False), (5, 2, True), (4, 1, True)):
        conv = Conv2dSame(4, 6, kernel, stride=stride, bias=bias).eval()
        static = StaticSameConv2d(conv).eval()
        for size in ((40, 24), (64, 8)):  # multiples of the stride: the only inputs it is swapped in for
            image = torch.rand(2, 4, *size)
            assert torch.equal(static(image), conv(image)), (kernel, stride, size)
    path = tmp_path / "conv.onnx"
    with torch.no_grad():
        torch.onnx.export(
            static, (image,), str(path), dynamo=False, opset_version=17, input_names=["x"],
            dynamic_axes={"x": {2: "height", 3: "width"}},
        )  # fmt: skip
    assert [node.op_type for node in onnx.load(str(path)).graph.node] == ["Conv"]
    other = torch.rand(2, 4, 32, 48)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": other.numpy()})[0]
    np.testing.assert_allclose(out, conv(other).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "name, swapped",
    [
        ("ssdlite320_efficientnet_lite0", 5),
        pytest.param("fasterrcnn_efficientnet_lite0_fpn", 5, marks=pytest.mark.slow),
    ],
)
def test_export_copy_pads_timm_convolutions_as_constants_where_the_transform_allows(name, swapped):
    import copy

    import torch

    from detect_ft.export.onnx_export import exportable
    from detect_ft.export.static_padding import StaticSameConv2d, freeze_same_padding

    model = separated_model(name, calibration_images=2)
    traced_copy = exportable(model)
    assert sum(isinstance(m, StaticSameConv2d) for m in traced_copy.modules()) == swapped
    assert not any(isinstance(m, StaticSameConv2d) for m in model.modules()), "the model itself is left as it is"
    image = torch.rand(3, 97, 131)  # no multiple of anything: the transform resizes or pads it
    with torch.no_grad():
        want, got = model([image])[0], traced_copy([image])[0]
    assert all(torch.equal(want[key], got[key]) for key in ("boxes", "scores", "labels"))
    if not model.transform.fixed_size:
        # Batches padded to multiples of 8 only: the convolutions after stride 8 keep computing their padding.
        loose = copy.deepcopy(model)
        loose.transform.size_divisible = 8
        assert freeze_same_padding(loose) == 3
