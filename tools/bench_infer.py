"""Batch-1 CPU inference: PyTorch eager vs ONNX fp32 vs ONNX INT8, latency and mAP, in one run.

    .venv/bin/python tools/bench_infer.py                      # trains each model briefly on synthetic data
    .venv/bin/python tools/bench_infer.py --checkpoint ssdlite320_mobilenet_v3_large=runs/a/checkpoints/best.pt

For each model: (1) a checkpoint, or a short training run from random init on a synthetic dataset
(no pretrained weights are needed, so mAPs are low but comparable across runtimes); (2) ``detect-ft``'s
export pipeline (parity check + INT8, calibrated on training images) which scores all three runtimes on
the validation split at batch 1; (3) latency: one validation image, ``--warmup`` calls then ``--runs``
timed calls per runtime, ``--threads`` threads for torch and onnxruntime alike (preprocessing included).
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
from detect_ft.edge import EdgeDetector
from detect_ft.evaluation.evaluator import torch_predictor
from detect_ft.evaluation.report import format_table
from detect_ft.export.pipeline import export_detector
from detect_ft.models import MODELS, build_model, load_detector

MODELS_TO_BENCH = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")
CLASSES = ("circle", "square", "triangle")


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
            print(f"  {name} step {step + 1}/{iters} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return model.eval()


def latency(predict, image: np.ndarray, warmup: int, runs: int) -> tuple[float, float]:
    """(p50, p90) milliseconds of ``predict([image])``."""
    for _ in range(warmup):
        predict([image])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict([image])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                        help="use this checkpoint instead of training (repeatable)")  # fmt: skip
    parser.add_argument("--train-iters", type=int, default=120, help="SGD steps for SSDlite")
    parser.add_argument("--rcnn-train-iters", type=int, default=30,
                        help="SGD steps for Faster R-CNN (~10x slower per step on 2 shared CPU cores)")  # fmt: skip
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=24)
    parser.add_argument("--side", type=int, default=160, help="model input size (min_size) and image side")
    parser.add_argument("--threads", type=int, default=2, help="threads for timed inference (torch and onnxruntime)")
    parser.add_argument("--train-threads", type=int, default=1,
                        help="torch threads while training; on a shared machine 2 OpenMP threads stall whenever "
                             "another process holds a core")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workdir", default="", help="keep data and models here (default: a temp folder)")
    args = parser.parse_args()
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)

    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_infer_"))
    root = make_synthetic_dataset(work / "data", num_train=args.train_images, num_val=args.val_images,
                                  image_size=args.side, classes=CLASSES, format="coco", seed=0)  # fmt: skip
    split = lambda name: load_split(format="coco", root=root, split=name, classes=list(CLASSES))[0]
    train, val = split("train.json"), split("val.json")
    calib = [read_image(r.image_path) for r in train.records[:16]]
    sample = read_image(val.records[0].image_path)
    rows = []
    for name in MODELS_TO_BENCH:
        if name in checkpoints:
            model, _ = load_detector(checkpoints[name])
        else:
            torch.set_num_threads(args.train_threads)
            iters = args.rcnn_train_iters if "rcnn" in name else args.train_iters
            model = train_briefly(name, train, iters, args.side)
        torch.set_num_threads(args.threads)
        report = export_detector(model, work / f"{name}.onnx", model_name=name, class_names=list(CLASSES),
                                 val_dataset=val, int8=True, calib_images=calib)  # fmt: skip
        maps = {"pytorch eager": report["parity"]["torch"], "onnx fp32": report["parity"]["onnx"],
                "onnx int8": report["int8"]}  # fmt: skip
        predictors = {
            "pytorch eager": torch_predictor(model, "cpu"),
            "onnx fp32": EdgeDetector(work / f"{name}.onnx", threads=args.threads).predict_batch,
            "onnx int8": EdgeDetector(work / f"{name}.int8.onnx", threads=args.threads).predict_batch,
        }
        eager_p50 = None
        for runtime, predict in predictors.items():
            p50, p90 = latency(predict, sample, args.warmup, args.runs)
            eager_p50 = eager_p50 or p50
            m = maps[runtime]
            rows.append([name, runtime, f"{p50:.1f}", f"{p90:.1f}", f"{eager_p50 / p50:.2f}x",
                         f"{100 * (m['map'] or 0):.1f}", f"{100 * (m['map50'] or 0):.1f}"])  # fmt: skip
        det = report["parity"]["detections"]
        print(f"{name}: parity {det['matched']}/{det['reference_detections']} detections matched, "
              f"max score diff {det['max_score_diff']:.1e}, max box diff {det['max_box_diff']:.1e} px", flush=True)  # fmt: skip
    print(f"\nbatch 1, {args.threads} threads, {args.side} px inputs, {len(val)} synthetic validation images, "
          f"{args.runs} timed runs after {args.warmup} warm-up; speed-up = eager p50 / p50")  # fmt: skip
    print(format_table(["model", "runtime", "p50 ms", "p90 ms", "speed-up", "mAP", "mAP50"], rows))
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
