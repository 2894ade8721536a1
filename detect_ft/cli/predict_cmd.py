"""``detect-ft predict MODEL.onnx|CHECKPOINT SOURCE --output DIR``: detect objects in images or a video.

An ``.onnx`` model runs through the torch-free edge runtime (torch is never imported); anything else is
read as a detect-ft checkpoint and runs in PyTorch. Writes annotated images (or ``<video>.pred.mp4``)
and ``predictions.json`` (COCO results with the dataset's original category ids) to DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run a checkpoint or an exported .onnx model on an image, a folder or a video; write annotated copies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="an exported .onnx file or a detect-ft checkpoint (.pt)")
    parser.add_argument("source", metavar="SOURCE", help="an image file, a folder of images or a video file")
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="folder for annotated outputs and predictions.json"
    )
    parser.add_argument("--conf", type=float, default=0.3, help="keep detections scoring at least this (default 0.3)")
    parser.add_argument("--device", default="auto", help="checkpoints only: auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="ONNX only: onnxruntime intra-op threads")


def run(args: argparse.Namespace) -> int:
    from detect_ft.edge.predict import predict_source
    from detect_ft.errors import DetectFTError

    if not 0 <= args.conf <= 1:
        raise DetectFTError(f"--conf {args.conf}: pass a score threshold in [0, 1], e.g. --conf 0.3")
    if Path(args.model).suffix.lower() == ".onnx":
        from detect_ft.edge.runtime import EdgeDetector

        detector = EdgeDetector(args.model, threads=args.threads)
        predict_batch, class_names, category_ids = detector.predict_batch, detector.class_names, detector.category_ids
    else:
        from detect_ft.evaluation.evaluator import load_predictor

        predict_batch, meta = load_predictor(args.model, args.device)
        class_names = list(meta["class_names"])
        category_ids = list(meta.get("category_ids") or range(1, len(class_names) + 1))
    summary = predict_source(predict_batch, args.source, args.output, class_names=class_names,
                             category_ids=category_ids, conf=args.conf)  # fmt: skip
    print(f"{summary['detections']} detections in {summary['images']} images/frames (conf >= {args.conf})")
    for path in summary["annotated"][:5]:
        print(f"wrote {path}")
    if len(summary["annotated"]) > 5:
        print(f"... and {len(summary['annotated']) - 5} more annotated files in {args.output}")
    print(f"wrote {summary['predictions']}")
    return 0
