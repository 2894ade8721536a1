"""Time detect-ft's COCO evaluation against the plain pycocotools route, on a seeded synthetic workload.

    python tools/bench_eval.py                 # 5,000 images, 80 classes, ~7 boxes, ~100 detections each
    python tools/bench_eval.py --images 500    # quick run

The plain route is what a user without detect-ft writes: the ground-truth dict and the results list
already in memory (no JSON files, which would only slow the baseline), then ``COCO()`` + ``loadRes`` +
``COCOeval`` evaluate/accumulate/summarize. detect-ft's route starts from records and per-image
prediction arrays and ends at the metrics dict (checks, conversion and scoring all timed). The 12
summary stats of every route must equal the plain route's bit for bit; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time

import numpy as np

from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.evaluation.coco_eval import BACKENDS, STAT_KEYS, coco_ground_truth, coco_metrics


def synthetic_workload(
    num_images: int, num_classes: int = 80, boxes_per_image: float = 7.0, dets_per_image: int = 100, seed: int = 0
) -> tuple[DatasetRecords, list[dict]]:
    """Records with Poisson(``boxes_per_image``) boxes (1% crowd) and ``dets_per_image`` detections per
    image: a jittered copy of each box (10% with a wrong class), the rest random boxes, scores uniform."""
    rng = np.random.default_rng(seed)
    records, predictions = [], []
    for i in range(num_images):
        width, height = int(rng.integers(320, 1024)), int(rng.integers(240, 768))
        n = int(rng.poisson(boxes_per_image))
        boxes = _random_boxes(rng, n, width, height)
        labels = rng.integers(1, num_classes + 1, n)
        records.append(
            ImageRecord(
                image_path=f"/synthetic/{i:06d}.jpg",
                width=width,
                height=height,
                boxes=boxes,
                labels=labels,
                iscrowd=rng.random(n) < 0.01,
                image_id=i + 1,
            )
        )
        jitter = rng.normal(0, 0.08, (n, 4)) * np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        hit_boxes = np.clip(boxes + jitter, 0, [width, height, width, height])
        hit_boxes[:, 2:] = np.maximum(hit_boxes[:, 2:], hit_boxes[:, :2] + 1)
        hit_labels = np.where(rng.random(n) < 0.1, rng.integers(1, num_classes + 1, n), labels)
        m = max(dets_per_image - n, 0)
        det_boxes = np.concatenate([hit_boxes, _random_boxes(rng, m, width, height)])
        det_labels = np.concatenate([hit_labels, rng.integers(1, num_classes + 1, m)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.7, m)])
        predictions.append(
            {"boxes": det_boxes.astype(np.float32), "scores": scores.astype(np.float32), "labels": det_labels}
        )
    names = [f"class{k:02d}" for k in range(1, num_classes + 1)]
    return DatasetRecords(records, names, source="synthetic"), predictions


def _random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    # Log-uniform sides give all three COCO size buckets.
    w = np.exp(rng.uniform(np.log(4), np.log(width * 0.8), n))
    h = np.exp(rng.uniform(np.log(4), np.log(height * 0.8), n))
    x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)


def plain_pycocotools(gt: dict, results: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12])


def plain_results(dataset: DatasetRecords, predictions: list[dict]) -> list[dict]:
    """The results list as a user would write it: one dict per box, xywh from the float32 xyxy."""
    results = []
    for record, pred in zip(dataset.records, predictions):
        for box, score, label in zip(
            pred["boxes"].astype(np.float64).tolist(), pred["scores"].tolist(), pred["labels"].tolist()
        ):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": record.image_id,
                    "category_id": dataset.category_ids[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(np.float64(score)),
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    args = parser.parse_args(argv)

    dataset, predictions = synthetic_workload(args.images, args.classes, seed=args.seed)
    num_dets = sum(len(p["boxes"]) for p in predictions)
    print(
        f"workload: {len(dataset)} images, {args.classes} classes, {dataset.num_boxes} boxes, "
        f"{num_dets} detections; python {platform.python_version()}, {os.cpu_count()} CPUs"
    )

    gt, results = coco_ground_truth(dataset), plain_results(dataset, predictions)
    start = time.perf_counter()
    reference = plain_pycocotools(gt, results)
    base = time.perf_counter() - start
    print(f"{'plain pycocotools (in-memory dict + loadRes)':<46} {base:8.2f} s   1.00x   reference")
    print("  stats: " + " ".join(f"{k}={v:.4f}" for k, v in zip(STAT_KEYS, reference)))

    failed = False
    for backend in args.backends:
        start = time.perf_counter()
        metrics = coco_metrics(dataset, predictions, backend=backend)
        elapsed = time.perf_counter() - start
        stats = np.array([-1.0 if metrics[k] is None else metrics[k] for k in STAT_KEYS])
        identical = bool(np.array_equal(stats, reference))
        worst = float(np.abs(stats - reference).max())
        failed |= not identical
        verdict = "identical" if identical else f"DIFFERENT (max |diff| {worst:.3g})"
        print(
            f"{'detect-ft coco_metrics, backend=' + backend:<46} {elapsed:8.2f} s  {base / elapsed:5.2f}x   {verdict}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
