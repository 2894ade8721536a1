"""``detect-ft predict MODEL.onnx|CHECKPOINT SOURCE --output DIR``: detect objects in images or videos.

An ``.onnx`` model runs through the torch-free edge runtime (torch is never imported); anything else is
read as a detect-ft checkpoint and runs in PyTorch (an OpenVINO ``.xml`` from ``export --format openvino``
runs in OpenVINO, torch-free too); both through :class:`detect_ft.api.Detector`. Writes
annotated images (or ``<video>.pred.mp4``) and ``predictions.json`` (COCO results with the dataset's
original category ids) to DIR, and with ``--save-format`` the predictions as a dataset in ``DIR/dataset``.
Detections are kept above each class's validated F1-optimal confidence (stored in the checkpoint or the
ONNX file), or 0.3 for models without; ``--conf`` sets one threshold for all classes. ``--batch N`` runs up
to N same-size images or frames together (default 8); ``--streams N`` runs N copies of an exported model in
parallel on them (throughput on a few-core CPU, N times the model's memory). ``--slice 512``
also runs each image as overlapping 512-pixel tiles and merges the detections (:mod:`detect_ft.inference.slicing`).

DIR/predict-files.json records what predict wrote; a later run replaces those files and refuses, before
writing anything, to replace any other (:mod:`detect_ft.inference.outputs`). Images are read as training
reads them: over the pixel limit (from the header) or truncated, a file stops the run with one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BATCH_HELP = (
    "run up to N same-size images or frames at once (default 8; a .pt model takes them as one batch on a GPU, an "
    ".onnx model exported with --batch M runs M per call, one exported without one by one)"
)
STREAMS_HELP = (
    "exported models only: parallel model copies for throughput on folders/videos, e.g. 2 on a 2-core CPU; "
    "they share --threads and run the images of each --batch together; costs N x the model's memory (default 1)"
)
HELP = "run a checkpoint or an exported .onnx model on images, folders, globs or videos; write annotated copies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="an exported .onnx or OpenVINO .xml file, or a detect-ft checkpoint (.pt)"
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        nargs="+",
        help="image files, folders of images, globs ('photos/*.jpg') or video files",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder for annotated outputs and predictions (a file predict did not write there is never replaced)",
    )
    parser.add_argument(
        "--conf",
        type=float,
        default=None,
        help="keep detections scoring at least this (default: the model's per-class thresholds "
        "from validation, else 0.3)",
    )
    parser.add_argument("--classes", default="", help="comma-separated class names to keep (default: all)")
    parser.add_argument(
        "--save-format",
        choices=("coco", "voc", "yolo"),
        default=None,
        help="also write the predictions as a dataset in DIR/dataset (pseudo-labels; images copied)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="exported models only: onnxruntime/OpenVINO threads")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help=BATCH_HELP)
    parser.add_argument("--streams", type=int, default=1, metavar="N", help=STREAMS_HELP)
    tiles = parser.add_argument_group("sliced inference (small objects in large images; docs/deploy.md)")
    tiles.add_argument(
        "--slice",
        type=int,
        default=0,
        metavar="PIXELS",
        help="also cut each image into overlapping PIXELS x PIXELS tiles, run them and merge the "
        "detections (e.g. 512; default 0: off)",
    )
    tiles.add_argument("--overlap", type=float, default=0.2, help="fraction of a tile its neighbour shares (0.2)")
    tiles.add_argument(
        "--merge",
        choices=("nms", "greedy"),
        default="nms",
        help="nms: class-wise NMS (IoU); greedy: merge overlapping boxes into their union (IoS)",
    )
    tiles.add_argument("--merge-iou", type=float, default=0.5, help="IoU (nms) or IoS (greedy) that makes duplicates")
    tiles.add_argument(
        "--no-full-image",
        dest="full_image",
        action="store_false",
        help="run the tiles only, not also the whole image (large objects may be split)",
    )


def run(args: argparse.Namespace) -> int:
    from detect_ft.api import Detector
    from detect_ft.inference.slicing import SliceOptions
    from detect_ft.inference.sources import count_frames
    from detect_ft.inference.writer import write_predictions
    from detect_ft.utils.errors import DetectFTError

    if args.conf is not None and not 0 <= args.conf <= 1:
        raise DetectFTError(f"--conf {args.conf}: pass a score threshold in [0, 1], e.g. --conf 0.3")
    if args.batch < 1:
        raise DetectFTError(f"--batch {args.batch}: pass at least 1 image per batch, e.g. --batch 8")
    if args.streams < 1:
        raise DetectFTError(f"--streams {args.streams}: pass at least 1 model copy, e.g. --streams 2")
    source = args.source[0] if len(args.source) == 1 else args.source
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    slicing = dict(overlap=args.overlap, merge=args.merge, full_image=args.full_image, merge_iou=args.merge_iou)
    tiles = SliceOptions(args.slice, **slicing) if args.slice else None  # checked before the model loads
    detector = Detector.load(args.model, device=args.device, threads=args.threads, streams=args.streams)
    _, note = detector.confidence(args.conf)
    print(f"{detector.model_name}: keeping detections above the {note}")
    if tiles is not None:
        print(tiles.describe())
    stream = detector.stream(source, args.conf, classes, slice=args.slice, batch=args.batch, **slicing)
    summary = write_predictions(
        stream, source, args.output, save_format=args.save_format, total=count_frames(source), progress=True
    )
    print(f"{summary['detections']} detections in {summary['images']} images/frames")
    for path in summary["annotated"][:5]:
        print(f"wrote {path}")
    if len(summary["annotated"]) > 5:
        print(f"... and {len(summary['annotated']) - 5} more annotated files in {args.output}")
    print(f"wrote {summary['predictions']}")
    if summary["dataset"]:
        root, written = Path(args.output) / "dataset", Path(summary["dataset"])
        split = written.stem if args.save_format == "voc" else written.relative_to(root).as_posix()
        print(
            f"wrote the predictions as a {args.save_format} dataset: data.format={args.save_format} "
            f"data.root={root} data.train={split}"
        )
    return 0
