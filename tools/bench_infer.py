"""Batch-1 CPU inference: PyTorch eager vs ONNX fp32 vs ONNX INT8 (and INT8 variants), latency and mAP, in one run.

    .venv/bin/python tools/bench_infer.py                      # trains each model briefly on synthetic data
    .venv/bin/python tools/bench_infer.py --checkpoint ssdlite320_mobilenet_v3_large=runs/a/checkpoints/best.pt
    OMP_NUM_THREADS=2 .venv/bin/python tools/bench_infer.py \
        --checkpoint ssdlite320_efficientnet_lite0=runs/demo/checkpoints/best.pt \
        --data-config configs/demo.yaml --variants all        # real photos, every INT8 variant side by side

For each model: (1) a checkpoint, or a short training run from random init on a synthetic dataset
(no pretrained weights are needed, so mAPs are low but comparable across runtimes); (2) ``detect-ft``'s
export pipeline (parity check + INT8 with the default options, calibrated on training images) which
scores all three runtimes on the validation split at batch 1; (3) with ``--variants``, each INT8 variant
(:data:`VARIANTS`) quantised and scored the same way; (4) latency: ``--warmup`` untimed rounds then
``--runs`` timed rounds over ``--images`` validation images; within a round every ONNX runtime runs the
same image, in an order rotated each round (so fp32, INT8 and the variants share the machine's load),
PyTorch eager is timed in its own block before them (its OpenMP threads keep spinning after a call and
would slow whatever runs next). ``--threads`` threads for torch and onnxruntime alike (intra-op;
inter-op 1), preprocessing included; "vs fp32" is the ONNX fp32 p50 over the runtime's p50.

``--batch-throughput N`` measures something else: images/s through onnxruntime of one model
(``ssdlite320_efficientnet_lite0``, or the ``--checkpoint`` models) exported at batch 1 and at batch N
(``detect-ft export --batch N``), and the batch-1 graph as :data:`STREAMS` parallel sessions sharing
``--threads`` (``EdgeDetector(streams=2)``), each running all ``--images`` validation images through
``EdgeDetector.predict_batch`` per round (rounds rotate which goes first), after checking that every
image's detections agree:

    OMP_NUM_THREADS=2 .venv/bin/python tools/bench_infer.py --batch-throughput 8 --images 32 --train-iters 30

``--targets`` measures one model (``ssdlite320_efficientnet_lite0`` trained briefly, or the first
``--checkpoint``) on one validation set through each deployment target side by side: PyTorch eager,
onnxruntime fp32 and INT8, OpenVINO fp32 and INT8 (NNCF, :mod:`detect_ft.export.openvino_int8`), and
the fp32 models as :data:`STREAMS` parallel streams sharing ``--threads`` (``*_streams``). Per target:
batch-1 latency p50/p90 (PyTorch in its own block, the others interleaved per round as above), images/s
on the timed images resized to 640x480 (camera frames: a batch graph runs only same-size images together)
fed one image and ``--target-batch`` images per ``predict_batch`` call (onnxruntime fp32 through a graph
exported at that batch; the ``_streams`` rows spread a call's images over 2 parallel model copies; the
other exported graphs take one image per run), and mAP/mAP50 on the validation split. INT8
models are built with the gate off (kept whatever they lose; the mAP column says it). A target that cannot
be built (no openvino/nncf, a failed conversion) gets a row saying why. The table is printed and written
as markdown to ``--table-out`` (default ``WORKDIR/targets.md``):

    OMP_NUM_THREADS=2 .venv/bin/python tools/bench_infer.py --targets all --images 32 --runs 30 \
        --checkpoint ssdlite320_efficientnet_lite0=runs/demo/checkpoints/best.pt --data-config checkpoint \
        --table-out docs/targets.md

With ``--data-config CONFIG`` the models are scored on that config's ``data.val`` and calibrated on its
``data.train`` (``--data-config checkpoint``: each checkpoint's own config) instead of synthetic data;
only the ``--checkpoint`` models are benched then.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from detect_ft.data.image import read_image
from detect_ft.data.load import load_split
from detect_ft.data.synthetic import make_synthetic_dataset
from detect_ft.evaluation.evaluator import torch_predictor
from detect_ft.evaluation.report import format_table
from detect_ft.export.onnx_export import build_metadata, export_onnx
from detect_ft.export.parity import compare_detections, score_runtime
from detect_ft.export.pipeline import cpu_int8_support, export_detector
from detect_ft.export.quantize import Int8Options, int8_path_for, quantize_int8
from detect_ft.inference import EdgeDetector
from detect_ft.inference.predictions import open_onnx_session
from detect_ft.inference.runtime import stream_threads
from detect_ft.models import MODELS, build_model, load_detector

MODELS_TO_BENCH = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")
CLASSES = ("circle", "square", "triangle")
BATCH_MODEL = "ssdlite320_efficientnet_lite0"  # --batch-throughput's and --targets' model without --checkpoint
STREAMS = 2  # the streams variants: parallel model copies sharing --threads (EdgeDetector(streams=))
# --targets, in table order; *_streams: the fp32 model as STREAMS parallel copies
FRAME_SIZE = (640, 480)  # --targets' images/s: the validation images at a camera's VGA size (width, height)
TARGETS = ("pytorch", "onnx_fp32", "onnx_fp32_streams", "onnx_int8", "openvino_fp32", "openvino_fp32_streams")
TARGETS += ("openvino_int8",)
# INT8 variants for --variants (name: options); the default (Int8Options()) is always benched as "onnx int8".
VARIANTS = {
    "conv": Int8Options(ops="conv"),  # the previous default: Conv/MatMul/Gemm only
    "per_tensor": Int8Options(per_channel=False),
    "first_fp32": Int8Options(exclude=("first",)),
    "last_fp32": Int8Options(exclude=("last",)),
    "head_fp32": Int8Options(exclude=("head",)),
    "first_last_fp32": Int8Options(exclude=("first", "last")),
    "percentile": Int8Options(calibration="percentile"),
    "entropy": Int8Options(calibration="entropy"),
    "reduce_range": Int8Options(reduce_range=True),
    "qoperator": Int8Options(format="qoperator"),
    "conv_qoperator": Int8Options(format="qoperator", ops="conv"),
}
# Session graph optimisation levels for --variants (the default INT8 file and fp32, each at that level;
# detect-ft's EdgeDetector uses onnxruntime's default, ORT_ENABLE_ALL).
LEVELS = {"opt_basic": "ORT_ENABLE_BASIC", "opt_extended": "ORT_ENABLE_EXTENDED"}


def train_briefly(name: str, dataset, iters: int, side: int, batch: int = 8, lr: float = 0.02) -> torch.nn.Module:
    """A random-init detector trained ``iters`` SGD steps on ``dataset`` (a bare loop, no augmentation)."""
    torch.manual_seed(0)
    options = {"min_size": side} if MODELS[name].fixed_size else {"min_size": side, "max_size": side}
    model = build_model(name, len(CLASSES), weights="none", class_names=list(CLASSES), **options)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    images = [torch.from_numpy(read_image(r.image_path)).permute(2, 0, 1).float().div(255) for r in dataset.records]
    targets = [{"boxes": torch.from_numpy(r.boxes), "labels": torch.from_numpy(r.labels)} for r in dataset.records]
    rng = np.random.default_rng(0)
    model.train()
    start = time.perf_counter()
    for step in range(iters):
        pick = rng.choice(len(images), size=batch, replace=False)
        losses = model([images[i] for i in pick], [targets[i] for i in pick])
        loss = sum(losses.values())
        for group in optimizer.param_groups:  # linear warm-up over the first 20 steps
            group["lr"] = lr * min(1.0, (step + 1) / 20)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        if step % 25 == 0 or step == iters - 1:
            print(
                f"  {name} step {step + 1}/{iters} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return model.eval()


def onnx_predictor(path, threads: int, level: str = "", streams: int = 1):
    """``EdgeDetector(path, threads=threads, streams=streams).predict_batch``; with ``level`` (a
    GraphOptimizationLevel name, one stream) its session is reopened at that graph optimisation level."""
    detector = EdgeDetector(path, threads=threads, streams=streams)
    if level:
        detector.session = detector.sessions[0] = open_onnx_session(path, threads=threads, graph_optimization=level)
    return detector.predict_batch


def latency_block(predict, images: list[np.ndarray], warmup: int, runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls of ``predict([image])`` (images cycled) after ``warmup`` calls."""
    for i in range(warmup):
        predict([images[i % len(images)]])
    times = []
    for i in range(runs):
        start = time.perf_counter()
        predict([images[i % len(images)]])
        times.append((time.perf_counter() - start) * 1000)
    return times


def latency_interleaved(predictors: dict, images: list[np.ndarray], warmup: int, runs: int) -> dict[str, list[float]]:
    """Milliseconds per call of each predictor, calls interleaved: in round ``r`` every predictor runs
    ``images[r % len(images)]`` once, starting at a different predictor each round."""
    names = list(predictors)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + runs):
        image = images[r % len(images)]
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            predictors[name]([image])
            if r >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def checkpoint_data(path: str, data_config: str, class_names: list[str]):
    """(train, val) splits of ``data_config`` (``checkpoint``: the checkpoint's own config), labelled in
    the checkpoint's class order; paths relative to the working directory, as ``detect-ft export``."""
    from detect_ft.config.schema import config_from_dict, load_config
    from detect_ft.data.split import SplitSpec, load_checked_split
    from detect_ft.models.weights import safe_torch_load

    if data_config == "checkpoint":
        saved = safe_torch_load(path, "checkpoint").get("config") or {}
        cfg = config_from_dict(saved, source=f"checkpoint {path}")
    else:
        cfg = load_config(data_config)
    spec = SplitSpec.from_config(cfg.data)
    split = lambda name: load_checked_split(spec, name, class_names)[0]
    return split(cfg.data.train), split(cfg.data.val), cfg


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--targets`` mode's options."""
    parser.add_argument(
        "--targets",
        default="",
        metavar="NAMES",
        help=f"instead: one model through each deployment target, 'all' or a comma list of {', '.join(TARGETS)}",
    )
    parser.add_argument("--target-batch", type=int, default=8, help="images per predict_batch call for --targets")
    parser.add_argument("--table-out", default="", help="--targets' markdown table (default: WORKDIR/targets.md)")


def parse_args() -> tuple[argparse.Namespace, dict[str, str], list[str]]:
    """The command line, the ``--checkpoint`` paths by model name and the ``--variants`` names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="MODEL=PATH",
        help="use this checkpoint instead of training (repeatable)",
    )
    parser.add_argument(
        "--data-config",
        default="",
        metavar="CONFIG",
        help="score on this config's data.val, calibrate on its data.train ('checkpoint': the "
        "checkpoint's own config); only --checkpoint models are benched",
    )
    parser.add_argument(
        "--variants",
        default="",
        metavar="NAMES",
        help=f"INT8 variants to bench too: 'all' or a comma list of {', '.join([*VARIANTS, *LEVELS])}",
    )
    parser.add_argument("--calib-images", type=int, default=32, help="INT8 calibration images (with --data-config)")
    parser.add_argument("--train-iters", type=int, default=120, help="SGD steps for SSDlite")
    parser.add_argument(
        "--rcnn-train-iters",
        type=int,
        default=30,
        help="SGD steps for Faster R-CNN (~10x slower per step on 2 shared CPU cores)",
    )
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=24)
    parser.add_argument("--side", type=int, default=160, help="model input size (min_size) and image side")
    parser.add_argument("--threads", type=int, default=2, help="threads for timed inference (torch and onnxruntime)")
    parser.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="torch threads while training; on a shared machine 2 OpenMP threads stall whenever "
        "another process holds a core",
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds (one call per runtime each)")
    parser.add_argument("--images", type=int, default=8, help="validation images the timed calls cycle through")
    parser.add_argument("--workdir", default="", help="keep data and models here (default: a temp folder)")
    batch_help = f"instead: images/s of batch-1 vs batch-N ONNX graphs ({BATCH_MODEL} or the --checkpoint models)"
    parser.add_argument("--batch-throughput", type=int, default=0, metavar="N", help=batch_help)
    add_target_arguments(parser)
    args = parser.parse_args()
    args.targets = list(TARGETS) if args.targets == "all" else [t for t in args.targets.split(",") if t]
    if set(args.targets) - set(TARGETS):
        parser.error(f"--targets: choose 'all' or from {', '.join(TARGETS)}")
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    variants = [*VARIANTS, *LEVELS] if args.variants == "all" else [v for v in args.variants.split(",") if v]
    if unknown := [v for v in variants if v not in VARIANTS and v not in LEVELS]:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join([*VARIANTS, *LEVELS])}")
    if args.data_config and not checkpoints:
        parser.error("--data-config needs --checkpoint MODEL=PATH")
    return args, checkpoints, variants


def synthetic_splits(work: Path, args: argparse.Namespace) -> tuple:
    """(train, val) of a synthetic COCO dataset written under ``work/data``."""
    root = make_synthetic_dataset(
        work / "data",
        num_train=args.train_images,
        num_val=args.val_images,
        image_size=args.side,
        classes=CLASSES,
        format="coco",
        seed=0,
    )
    split = lambda name: load_split(format="coco", root=root, split=name, classes=list(CLASSES))[0]
    return split("train.json"), split("val.json")


def model_under_test(name: str, args: argparse.Namespace, checkpoints: dict[str, str], synthetic) -> tuple:
    """(model, class_names): the ``--checkpoint`` model, else one trained briefly on the synthetic train split."""
    if name in checkpoints:
        model, meta = load_detector(checkpoints[name])
        return model, list(meta["class_names"])
    torch.set_num_threads(args.train_threads)
    iters = args.rcnn_train_iters if "rcnn" in name else args.train_iters
    return train_briefly(name, synthetic[0], iters, args.side), list(CLASSES)


def scoring_data(name: str, args: argparse.Namespace, checkpoints: dict[str, str], class_names, synthetic) -> tuple:
    """(val, calibration images, score threshold, a line describing them): ``--data-config``'s splits,
    else the synthetic ones."""
    if args.data_config:
        from detect_ft.api.exporting import calibration_images

        train, val, cfg = checkpoint_data(checkpoints[name], args.data_config, class_names)
        calib, score_thresh = calibration_images(train, args.calib_images), cfg.eval.score_thresh
        data_desc = f"{len(val)} validation images of {cfg.data.root} ({cfg.data.val}), {len(calib)} calibration images"
    else:
        train, val = synthetic
        calib, score_thresh = [read_image(r.image_path) for r in train.records[:16]], 0.001
        data_desc = f"{len(val)} synthetic validation images of {args.side} px, {len(calib)} calibration images"
    return val, calib, score_thresh, data_desc


def bench_variant(
    variant: str, name: str, work: Path, calib, val, score_thresh: float, threads: int, bench: dict
) -> None:
    """Quantise (an INT8 variant) or reopen (a graph optimisation level) and score ``variant``, adding its
    predictors, metrics and labels to ``bench`` (keys ``predictors``, ``metrics``, ``labels``)."""
    predictors, metrics, labels = bench["predictors"], bench["metrics"], bench["labels"]
    fp32_path, int8_path = work / f"{name}.onnx", work / f"{name}.int8.onnx"
    start = time.perf_counter()
    if variant in VARIANTS:
        path = work / f"{name}.int8_{variant}.onnx"
        info = quantize_int8(fp32_path, path, calib, VARIANTS[variant])
        predictors[variant] = onnx_predictor(path, threads)
        labels[variant] = f"int8 {variant} ({info['description']})"
    else:
        for runtime, path in (("fp32", fp32_path), ("int8", int8_path)):
            predictors[f"{runtime} {variant}"] = onnx_predictor(path, threads, LEVELS[variant])
            labels[f"{runtime} {variant}"] = f"{runtime} {LEVELS[variant]}" + (
                " (default INT8)" if runtime == "int8" else ""
            )
    for key in [variant] if variant in VARIANTS else [f"fp32 {variant}", f"int8 {variant}"]:
        _, metrics[key] = score_runtime(predictors[key], val, score_thresh=score_thresh)
    print(f"  {name}: variant {variant} quantised and scored in {time.perf_counter() - start:.0f} s", flush=True)


def latency_rows(name: str, model, val, bench: dict, args: argparse.Namespace) -> list[list[str]]:
    """Table rows (model, runtime, p50, p90, vs fp32, mAP, mAP50, d mAP, d mAP50) of every runtime in
    ``bench``, PyTorch eager timed in its own block first."""
    images = [read_image(r.image_path) for r in val.records[: args.images]]
    eager = latency_block(torch_predictor(model, "cpu"), images, args.warmup, args.runs)
    time.sleep(1.0)  # let torch's OpenMP threads go idle before onnxruntime is timed
    times = {"pytorch eager": eager, **latency_interleaved(bench["predictors"], images, args.warmup, args.runs)}
    fp32_p50 = float(np.median(times["onnx fp32"]))
    fp32_metrics = bench["metrics"]["onnx fp32"]
    rows = []
    for runtime, values in times.items():
        p50, p90 = float(np.percentile(values, 50)), float(np.percentile(values, 90))
        m = bench["metrics"][runtime]
        delta = [f"{100 * ((m[key] or 0) - (fp32_metrics[key] or 0)):+.2f}" for key in ("map", "map50")]
        rows.append(
            [
                name,
                bench["labels"].get(runtime, runtime),
                f"{p50:.1f}",
                f"{p90:.1f}",
                f"{fp32_p50 / p50:.2f}x",
                f"{100 * (m['map'] or 0):.1f}",
                f"{100 * (m['map50'] or 0):.1f}",
                *delta,
            ]
        )
    return rows


def bench_model(name: str, args, checkpoints: dict[str, str], variants: list[str], work: Path, synthetic) -> tuple:
    """(table rows, note) of one model: export with parity and INT8, the variants, then latency."""
    model, class_names = model_under_test(name, args, checkpoints, synthetic)
    val, calib, score_thresh, data_desc = scoring_data(name, args, checkpoints, class_names, synthetic)
    torch.set_num_threads(args.threads)
    fp32_path = work / f"{name}.onnx"
    report = export_detector(
        model,
        fp32_path,
        model_name=name,
        class_names=class_names,
        val_dataset=val,
        score_thresh=score_thresh,
        int8=True,
        calib_images=calib,
        int8_keep_anyway=True,
    )
    bench = {
        "metrics": {
            "pytorch eager": report["parity"]["torch"],
            "onnx fp32": report["parity"]["onnx"],
            "onnx int8": report["int8"],
        },
        "labels": {"onnx int8": f"onnx int8 (default: {report['int8']['description']})"},
        "predictors": {
            "onnx fp32": onnx_predictor(fp32_path, args.threads),
            "onnx int8": onnx_predictor(work / f"{name}.int8.onnx", args.threads),
        },
    }
    for variant in variants:
        bench_variant(variant, name, work, calib, val, score_thresh, args.threads, bench)
    det = report["parity"]["detections"]
    note = (
        f"{name}: {data_desc}; parity {det['matched']}/{det['reference_detections']} detections matched, "
        f"max score diff {det['max_score_diff']:.1e}, max box diff {det['max_box_diff']:.1e} px; "
        f"default INT8 gate (export.int8_max_map_drop={report['int8']['max_map_drop']}): "
        f"{report['int8']['gate']}"
    )
    return latency_rows(name, model, val, bench, args), note


def batch_throughput(name: str, args: argparse.Namespace, checkpoints: dict[str, str], work: Path, synthetic) -> list:
    """A table row: images/s of ``name``'s batch-1 and batch-``args.batch_throughput`` ONNX graphs, and of
    the batch-1 graph as :data:`STREAMS` parallel sessions, over the same ``--images`` validation images
    per round (``EdgeDetector.predict_batch`` on all of them), and each one's ratio to batch 1."""
    batch = args.batch_throughput
    model, class_names = model_under_test(name, args, checkpoints, synthetic)
    val = scoring_data(name, args, checkpoints, class_names, synthetic)[0]
    images = [read_image(r.image_path) for r in val.records[: args.images]]
    detectors = {}
    for b in (1, batch):
        path = work / f"{name}.batch{b}.onnx"
        meta = build_metadata(model, model_name=name, class_names=class_names, opset=17, batch=b)
        export_onnx(model, path, metadata=meta, opset=17, batch=b)
        detectors[b] = EdgeDetector(path, threads=args.threads)
    detectors["streams"] = EdgeDetector(work / f"{name}.batch1.onnx", threads=args.threads, streams=STREAMS)
    reference = detectors[1].predict_batch(images)
    for key in (batch, "streams"):
        parity = compare_detections(reference, detectors[key].predict_batch(images))
        print(
            f"{name}: {len(images)} images of sizes {sorted({img.shape[:2] for img in images})}, per image "
            f"{f'{STREAMS} streams' if key == 'streams' else f'batch {key}'} vs batch 1: {parity['matched']}/"
            f"{parity['reference_detections']} detections matched, max score diff {parity['max_score_diff']:.1e}"
        )
    runners = {key: detector.predict_batch for key, detector in detectors.items()}
    rate = throughput_interleaved(runners, images, len(images), args.warmup, args.runs)
    return [name] + [
        f"{rate[key]:.1f} ({rate[key] / rate[1]:.2f}x)" if key != 1 else f"{rate[1]:.1f}" for key in detectors
    ]


def main_batch_throughput(args: argparse.Namespace, checkpoints: dict[str, str], work: Path, synthetic) -> None:
    """``--batch-throughput N``: :func:`batch_throughput` of each model, as one table."""
    batch = args.batch_throughput
    rows = [batch_throughput(name, args, checkpoints, work, synthetic) for name in checkpoints or [BATCH_MODEL]]
    stream_total = STREAMS * stream_threads(args.threads, STREAMS)  # each stream gets at least one thread
    print(
        f"onnxruntime fp32, {args.threads} threads ({STREAMS} streams: {STREAMS} sessions, {stream_total} threads "
        "in all), "
        f"{args.warmup} warm-up + {args.runs} timed rounds, each round all images through predict_batch "
        "(preprocessing included); (x) = images/s over batch 1's"
    )
    headers = ["model", "batch 1 img/s", f"batch {batch} img/s", f"batch 1, {STREAMS} streams img/s"]
    print(format_table(headers, rows))
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def build_targets(name: str, model, class_names, val, calib, score_thresh: float, args, work: Path) -> dict:
    """Each of ``args.targets`` built and scored on ``val``: name -> ``{"predict", "predict_many", "metrics",
    "note"}``, or ``{"error": why}`` when it cannot be built. The ONNX fp32 file is exported (and checked
    against PyTorch) once; the others are made from it."""
    fp32 = work / f"{name}.onnx"
    report = export_detector(
        model, fp32, model_name=name, class_names=class_names, val_dataset=val, score_thresh=score_thresh
    )
    scored = {"pytorch": report["parity"]["torch"], "onnx_fp32": report["parity"]["onnx"]}
    builders = {
        "pytorch": lambda: (torch_predictor(model, "cpu"), "eager, one forward per call"),
        "onnx_fp32": lambda: (onnx_predictor(fp32, args.threads), "verified against PyTorch"),
        "onnx_fp32_streams": lambda: (
            onnx_predictor(fp32, args.threads, streams=STREAMS),
            f"{STREAMS} sessions sharing the threads, images spread over them",
        ),
        "onnx_int8": lambda: onnx_int8_target(fp32, calib, args.threads),
        "openvino_fp32": lambda: openvino_target(fp32, work / f"{name}.xml", None, args.threads),
        "openvino_fp32_streams": lambda: openvino_target(
            fp32, work / f"{name}.streams.xml", None, args.threads, STREAMS
        ),
        "openvino_int8": lambda: openvino_target(fp32, work / f"{name}.int8.xml", calib, args.threads),
    }
    built: dict[str, dict] = {}
    for target in args.targets:
        try:
            predict, note = builders[target]()
            metrics = scored.get(target) or score_runtime(predict, val, score_thresh=score_thresh)[1]
        except Exception as exc:  # any failure to build one target becomes its row, not the end of the run
            built[target] = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            print(f"  {target}: not built ({built[target]['error']})", flush=True)
            continue
        built[target] = {"predict": predict, "predict_many": predict, "metrics": metrics, "note": note}
    if "onnx_fp32" in built and "error" not in built["onnx_fp32"] and args.target_batch > 1:
        path = work / f"{name}.batch{args.target_batch}.onnx"
        meta = build_metadata(model, model_name=name, class_names=class_names, opset=17, batch=args.target_batch)
        export_onnx(model, path, metadata=meta, opset=17, batch=args.target_batch)
        built["onnx_fp32"]["predict_many"] = onnx_predictor(path, args.threads)
        built["onnx_fp32"]["note"] += f"; images/s through a batch-{args.target_batch} graph"
    return built


def onnx_int8_target(fp32: Path, calib, threads: int) -> tuple:
    """(predict_batch, note) of the default ONNX INT8 quantisation of ``fp32`` (no gate)."""
    info = quantize_int8(fp32, int8_path_for(fp32), calib)
    return onnx_predictor(int8_path_for(fp32), threads), f"{info['description']}, not gated"


def openvino_target(fp32: Path, xml: Path, calib, threads: int, streams: int = 1) -> tuple:
    """(predict_batch, note) of ``fp32`` converted to an OpenVINO IR at ``xml`` (``streams`` OpenVINO CPU
    streams); with ``calib`` quantised by NNCF on those images (no gate)."""
    from detect_ft.export.openvino_export import convert_to_ir
    from detect_ft.inference.openvino_runtime import OpenVINODetector

    if calib is None:
        convert_to_ir(fp32, xml)
        note = "fp32 kernels" + (f"; {streams} OpenVINO streams sharing the threads" if streams > 1 else "")
        return OpenVINODetector(xml, threads=threads, streams=streams).predict_batch, note
    from detect_ft.export.openvino_int8 import quantize_openvino

    plain = xml.with_name(f"{fp32.stem}.for_int8.xml")
    convert_to_ir(fp32, plain)
    info = quantize_openvino(plain, xml, calib)
    return OpenVINODetector(xml, threads=threads).predict_batch, f"{info['description']}, not gated"


def throughput_interleaved(predictors: dict, images: list[np.ndarray], batch: int, warmup: int, runs: int) -> dict:
    """Images/s of each predictor over ``images`` in calls of ``batch`` images, rounds rotating which
    predictor goes first (as :func:`latency_interleaved`)."""
    names = list(predictors)
    seconds = {name: 0.0 for name in names}
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    for r in range(warmup + runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for chunk in chunks:
                predictors[name](chunk)
            if r >= warmup:
                seconds[name] += time.perf_counter() - start
    return {name: runs * len(images) / max(seconds[name], 1e-9) for name in names}


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """``headers`` and ``rows`` as a GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def as_frames(images: list[np.ndarray]) -> list[np.ndarray]:
    """``images`` resized to :data:`FRAME_SIZE`, as the frames of a camera: a batch graph runs only same-size
    images together (a lone image fills a whole batch), so images/s is measured on frames."""
    import cv2

    return [cv2.resize(image, FRAME_SIZE, interpolation=cv2.INTER_AREA) for image in images]


def target_rows(
    built: dict, images: list[np.ndarray], frames: list[np.ndarray], args: argparse.Namespace
) -> list[list[str]]:
    """One table row per target: batch-1 latency p50/p90 over ``images``, images/s over the same-size
    ``frames`` one per call and ``args.target_batch`` per call, mAP, mAP50, note (or why it is missing)."""
    ready = {t: b for t, b in built.items() if "error" not in b}
    times, single, many = {}, {}, {}
    rounds = (1, args.runs)  # warm-up rounds, timed rounds
    if "pytorch" in ready:  # its own block: torch's OpenMP threads keep spinning after a call
        times["pytorch"] = latency_block(ready["pytorch"]["predict"], images, args.warmup, args.runs)
        single.update(throughput_interleaved({"pytorch": ready["pytorch"]["predict"]}, frames, 1, *rounds))
        many.update(
            throughput_interleaved({"pytorch": ready["pytorch"]["predict_many"]}, frames, args.target_batch, *rounds)
        )
        time.sleep(1.0)
    others = {t: b for t, b in ready.items() if t != "pytorch"}
    if others:
        times.update(latency_interleaved({t: b["predict"] for t, b in others.items()}, images, args.warmup, args.runs))
        single.update(throughput_interleaved({t: b["predict"] for t, b in others.items()}, frames, 1, *rounds))
        batched = {t: b["predict_many"] for t, b in others.items()}
        many.update(throughput_interleaved(batched, frames, args.target_batch, *rounds))
    rows = []
    for target, b in built.items():
        if "error" in b:
            rows.append([target, "-", "-", "-", "-", "-", "-", f"not built: {b['error']}"])
            continue
        m = b["metrics"]
        p50, p90 = np.percentile(times[target], 50), np.percentile(times[target], 90)
        base = single.get(target.removesuffix("_streams"), single[target])  # streams: vs the one-session row
        rates = f"{single[target]:.1f}", f"{many[target]:.1f} ({many[target] / base:.2f}x)"
        scores = f"{100 * (m['map'] or 0):.1f}", f"{100 * (m['map50'] or 0):.1f}"
        rows.append([target, f"{p50:.1f}", f"{p90:.1f}", *rates, *scores, b["note"]])
    return rows


def main_targets(args: argparse.Namespace, checkpoints: dict[str, str], work: Path, synthetic) -> None:
    """``--targets``: :func:`build_targets` of one model, timed by :func:`target_rows`, as one table."""
    name = next(iter(checkpoints), BATCH_MODEL)
    model, class_names = model_under_test(name, args, checkpoints, synthetic)
    val, calib, score_thresh, data_desc = scoring_data(name, args, checkpoints, class_names, synthetic)
    torch.set_num_threads(args.threads)
    built = build_targets(name, model, class_names, val, calib, score_thresh, args, work)
    images = [read_image(r.image_path) for r in val.records[: args.images]]
    rows = target_rows(built, images, as_frames(images), args)
    batch = args.target_batch
    headers = ["target", "b1 p50 ms", "b1 p90 ms", "b1 img/s", f"b{batch} img/s (vs b1)", "mAP", "mAP50", "notes"]
    text = "\n".join(
        [
            f"{name}: {data_desc}; {args.threads} threads, CPU INT8 support: {cpu_int8_support()}",
            f"batch 1: {args.warmup} warm-up + {args.runs} timed calls cycling {len(images)} validation images "
            "(PyTorch in its own block, the rest interleaved per round); "
            f"img/s: {args.runs} rounds of the {len(images)} images resized to {FRAME_SIZE[0]}x{FRAME_SIZE[1]} "
            f"(camera frames) in calls of 1 and of {batch} (vs b1: the same runtime's b1 img/s; a _streams row's, "
            f"that of the row without streams, as a lone image runs on one stream's share of the threads); "
            f"preprocessing included; mAP on all {len(val)} validation images",
            "",
            markdown_table(headers, rows),
        ]
    )
    out = Path(args.table_out) if args.table_out else work / "targets.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}; load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def main() -> None:
    args, checkpoints, variants = parse_args()
    print(
        f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} cores, "
        f"CPU INT8 support: {cpu_int8_support()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_infer_"))
    work.mkdir(parents=True, exist_ok=True)
    synthetic = None if args.data_config else synthetic_splits(work, args)
    if args.batch_throughput:
        torch.set_num_threads(args.threads)
        main_batch_throughput(args, checkpoints, work, synthetic)
        return
    if args.targets:
        main_targets(args, checkpoints, work, synthetic)
        return
    jobs = list(checkpoints) if args.data_config else list(MODELS_TO_BENCH)
    rows, notes = [], []
    for name in jobs:
        model_rows, note = bench_model(name, args, checkpoints, variants, work, synthetic)
        rows += model_rows
        notes.append(note)
    print()
    print("\n".join(notes))
    print(
        f"batch 1, {args.threads} threads, {args.warmup} warm-up + {args.runs} timed rounds over {args.images} "
        "validation images; ONNX runtimes interleaved per round, PyTorch eager in its own block; "
        "vs fp32 = ONNX fp32 p50 / p50; d = change vs ONNX fp32 in AP points"
    )
    print(format_table(["model", "runtime", "p50 ms", "p90 ms", "vs fp32", "mAP", "mAP50", "d mAP", "d mAP50"], rows))
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
