"""Score one or more checkpoints or ONNX models on a dataset config; write a markdown table and a JSON side by side.

    python tools/benchmark_map.py configs/raccoon.yaml --weights runs/a/checkpoints/best.pt runs/b/checkpoints/best.pt
    python tools/benchmark_map.py CONFIG [key=value ...] --weights A.pt [B.pt ...] --out benchmarks/raccoon_val

Each model is scored with the same protocol as ``detect-ft eval`` (eval.* keys: backend, batch_size,
score_thresh; train.device / train.workers for inference). Writes ``OUT.md`` (overall table and a
per-class AP table) and ``OUT.json`` (every model's full metrics). images/s is prediction wall time
only (decode + model), measured after one warm-up batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from detect_ft.api import Detector
from detect_ft.config.schema import load_config
from detect_ft.data.split import SplitSpec, load_checked_split
from detect_ft.evaluation.evaluator import predict_records, score_predictions
from detect_ft.evaluation.report import fmt, markdown_table
from detect_ft.inference.predictions import filter_predictions
from detect_ft.utils.atomic_io import write_json_atomic, write_text_atomic
from detect_ft.utils.errors import DetectFTError


def benchmark(cfg, weights: list[str], split_name: str) -> list[dict]:
    """Metrics of each checkpoint on the config's ``data.<split_name>`` split, with ``weights``,
    ``model_name`` and ``images_per_s`` added."""
    split = getattr(cfg.data, split_name)
    if not split:
        raise DetectFTError(f"config key 'data.{split_name}' is empty; set it to the split to score")
    spec = SplitSpec.from_config(cfg.data)
    results = []
    for path in weights:
        detector = Detector.load(path, device=cfg.train.device)
        predict_batch = detector.predict_batch
        # the model's class order labels the split
        dataset, _ = load_checked_split(spec, split, detector.class_names)
        # One warm-up batch so lazy CUDA/cuDNN initialisation is not billed to the first model.
        warm = dataclasses.replace(dataset, records=dataset.records[: cfg.eval.batch_size])
        predict_records(predict_batch, warm, batch_size=cfg.eval.batch_size, progress=False)
        start = time.perf_counter()
        raw = predict_records(predict_batch, dataset, batch_size=cfg.eval.batch_size, workers=cfg.train.workers)
        seconds = time.perf_counter() - start
        metrics = score_predictions(
            dataset, filter_predictions(raw, cfg.eval.score_thresh), backend=cfg.eval.backend, source=path
        )
        metrics.update(
            weights=path,
            model_name=detector.model_name,
            images_per_s=len(dataset) / seconds,
            dataset=dataset.source,
            split=split_name,
        )
        results.append(metrics)
        print(f"{path}: mAP {fmt(metrics['map'])}  mAP50 {fmt(metrics['map50'])}  {metrics['images_per_s']:.1f} img/s")
    return results


def to_markdown(results: list[dict]) -> str:
    """Overall table (one row per model) and per-class AP@[.50:.95] table (one column per model)."""
    overall = [
        (
            r["weights"],
            r["model_name"],
            fmt(r["map"]),
            fmt(r["map50"]),
            fmt(r["map75"]),
            fmt(r["voc_map50"]),
            f"{r['images_per_s']:.1f}",
        )
        for r in results
    ]
    names = list(dict.fromkeys(n for r in results for n in r["per_class"]))
    per_class = [(n, *(fmt(r["per_class"].get(n)) for r in results)) for n in names]
    first = results[0]
    return "\n".join(
        [
            f"Dataset {first['dataset']} ({first['split']}), {first['num_images']} images, "
            f"{first['num_ground_truth']} boxes; COCO protocol via {first['backend']}.",
            "",
            markdown_table(("weights", "model", "mAP", "mAP50", "mAP75", "VOC AP50", "images/s"), overall),
            "",
            "Per-class AP@[.50:.95]:",
            "",
            markdown_table(("class", *(f"#{i + 1}" for i in range(len(results)))), per_class),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="dataset/model YAML config")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument(
        "--weights", nargs="+", required=True, help="detect-ft checkpoints (.pt) or exported models (.onnx)"
    )
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--out", default="benchmark_map", help="output stem: writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        results = benchmark(cfg, args.weights, args.split)
    except DetectFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_text_atomic(out.with_suffix(".md"), to_markdown(results))
    write_json_atomic(out.with_suffix(".json"), results)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
