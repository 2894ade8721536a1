"""Measure the model table's figures here, or write the README's model table from the registry.

    python tools/model_table.py [--threads 2] [--runs 10] [--models NAME ...]
    python tools/model_table.py --write-readme

Measuring prints the table's rows: COCO box mAP (torchvision's metadata), parameters, CPU latency here.
Models on a timm backbone have no COCO weights (their column says so); their parameter count is
counted on the built model (80 classes, as torchvision's COCO figures count). The figures go into each
model's ``register_model(..., figures=ModelFigures(...))`` call; ``--write-readme`` then rewrites the
README's table from the registrations (tests/test_model_zoo.py checks that the two agree).

Latency is batch-1 eager PyTorch inference on a 640x480 image at each model's default input size,
median over ``--runs`` after two warm-up runs, with ``--threads`` intra-op threads. Weights are random
(``weights=none``, no download), with the score threshold of the COCO models, so post-processing costs
what it costs at deployment; trained weights keep fewer boxes and can be slightly faster.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from detect_ft.models import MODELS, build_model
from detect_ft.models.zoo import readme_with_table
from detect_ft.utils.atomic_io import write_text_atomic

README = Path(__file__).resolve().parents[1] / "README.md"


def latency_ms(model: torch.nn.Module, runs: int) -> float:
    image = [torch.rand(3, 480, 640)]
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            start = time.perf_counter()
            model(image)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--write-readme", action="store_true", help="rewrite README.md's table from the registry")
    args = parser.parse_args()
    if args.write_readme:
        write_text_atomic(README, readme_with_table(README.read_text()))
        print(f"wrote the model table of {README}")
        return
    torch.set_num_threads(args.threads)
    print(f"| model | COCO box mAP | params (M) | CPU latency, {args.threads} threads (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.models:
        model = build_model(name, 80, weights="none").eval()
        weights = MODELS[name].coco_weights
        if weights is not None:
            box_map = f"{weights.meta['_metrics']['COCO-val2017']['box_map']:.1f}"
            params = weights.meta["num_params"]
        else:
            box_map, params = "- (ImageNet backbone)", sum(p.numel() for p in model.parameters())
        print(f"| {name} | {box_map} | {params / 1e6:.1f} | {latency_ms(model, args.runs):.0f} |", flush=True)


if __name__ == "__main__":
    main()
