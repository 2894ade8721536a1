"""Training throughput of detect-ft's ``train_one_epoch`` against a bare PyTorch loop, in one run.

    python tools/bench_train.py                       # ssdlite320 on CPU, batch 8, 320x320 synthetic images
    python tools/bench_train.py --device cuda --batch 32 --iters 50

Both loops train the same model on the same synthetic data, loader, batch size and optimizer (SGD with
detect-ft's parameter groups). Ours adds what the trainer always does: the LR schedule, the non-finite
loss guard (one host sync per batch for the loss values), running loss means and the tqdm bar. The two
run alternately ``--repeats`` times after a warm-up; img/s is images / wall time of each call, loader
start-up included. The figure to quote is the median over repeats of ours/bare within a repeat (the two
calls run back to back); the target is >= 0.95.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch  # noqa: E402

from detect_ft.data.dataset import DetectionDataset, build_loader  # noqa: E402
from detect_ft.data.split import SplitSpec, load_checked_split  # noqa: E402
from detect_ft.data.synthetic import make_synthetic_dataset  # noqa: E402
from detect_ft.data.transforms import build_transform  # noqa: E402
from detect_ft.engine.loop import train_one_epoch  # noqa: E402
from detect_ft.engine.optim import build_optimizer, build_scheduler  # noqa: E402
from detect_ft.models import build_model  # noqa: E402


def bare_loop(model, optimizer, loader, device, iters: int) -> int:
    """What a user writes by hand: forward, sum the losses, backward, step. Returns images seen."""
    model.train()
    seen = 0
    for images, targets in itertools.islice(loader, iters):
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=64, help="synthetic training images")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=8, help="timed iterations per call")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed calls of each loop")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(tmp, num_train=args.images, num_val=0, image_size=args.image_size, seed=0)
        records, _ = load_checked_split(SplitSpec(format="coco", root=tmp), "train.json", None)
        dataset = DetectionDataset(records, build_transform("light", train=True))
        model = build_model(args.model, records.num_classes, "none", records.class_names).to(device)
        optimizer = build_optimizer(model, args.model, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)
        scheduler = build_scheduler(
            optimizer, scheduler="cosine", total_steps=10**6, steps_per_epoch=10**3, warmup_iters=0
        )

        def loader(seed: int):
            return build_loader(dataset, batch_size=args.batch, shuffle=True, workers=args.workers, seed=seed)

        def ours(seed: int) -> int:
            stats = train_one_epoch(
                model, optimizer, loader(seed), device, scheduler=scheduler, max_iters=args.iters, progress=True
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            return stats["images"]

        runs = {"bare": lambda seed: bare_loop(model, optimizer, loader(seed), device, args.iters), "ours": ours}
        bare_loop(model, optimizer, loader(999), device, 3)  # warm-up: allocator, kernel selection, page cache
        results: dict[str, list[float]] = {"bare": [], "ours": []}
        for repeat in range(args.repeats):
            order = ("bare", "ours") if repeat % 2 == 0 else ("ours", "bare")
            for name in order:
                start = time.perf_counter()
                images = runs[name](repeat)
                results[name].append(images / (time.perf_counter() - start))

    bare, ours_ = statistics.median(results["bare"]), statistics.median(results["ours"])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'CPU'}"
    print(
        f"\n{args.model}, batch {args.batch}, {args.image_size}x{args.image_size} images, {args.iters} iterations x "
        f"{args.repeats} repeats, {args.workers} loader workers, {torch.get_num_threads()} torch threads, "
        f"{device} ({where})"
    )
    for name, values in results.items():
        runs_text = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:<5} img/s: median {statistics.median(values):7.2f}   runs {runs_text}")
    # Each repeat times the two loops back to back, so its ratio is least disturbed by load that drifts
    # over the run (other jobs on a shared machine); the median of those ratios is the figure to quote.
    pairs = [o / b for o, b in zip(results["ours"], results["bare"])]
    print(
        f"  ratio ours/bare: {statistics.median(pairs):.3f} median of per-repeat ratios "
        f"({', '.join(f'{r:.3f}' for r in pairs)}); ratio of medians {ours_ / bare:.3f} (target >= 0.95)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
