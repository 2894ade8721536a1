"""Training throughput of detect-ft's ``train_one_epoch`` against a bare PyTorch loop, in one run.

    python tools/bench_train.py                       # ssdlite320 on CPU, batch 8, 320x320 synthetic images
    python tools/bench_train.py --device cuda --batch 32 --iters 50

Both loops train the same model on the same synthetic data, loader, batch size and optimizer (SGD with
detect-ft's parameter groups). Ours adds what the trainer always does: the LR schedule, the non-finite
loss guard (one host sync per batch for the loss values), running loss means and the tqdm bar. The two
run alternately ``--repeats`` times after a warm-up; img/s is images / wall time of each call, loader
start-up included. The figure to quote is the median over repeats of ours/bare within a repeat (the two
calls run back to back); the target is >= 0.95.

    python tools/bench_train.py --overhead --threads 1 --repeats 7   # the loop's own cost per step

``--overhead`` times the loop alone: a toy detector (one small conv) on batches already on the device,
no loader, so a step is almost all Python and optimizer work. It prints ms/step of forward + backward
only, of the bare loop and of ``train_one_epoch`` without and with its progress bar (1000 steps per
call unless ``--iters`` says otherwise).
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
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch  # noqa: E402

from detect_ft.data.dataset import DetectionDataset, build_loader  # noqa: E402
from detect_ft.data.split import SplitSpec, load_checked_split  # noqa: E402
from detect_ft.data.synthetic import make_synthetic_dataset  # noqa: E402
from detect_ft.data.transforms import build_transform  # noqa: E402
from detect_ft.engine.fit import train_one_epoch  # noqa: E402
from detect_ft.engine.optim import build_optimizer, build_scheduler  # noqa: E402
from detect_ft.engine.run import Run, TrainOptions  # noqa: E402
from detect_ft.models import build_model  # noqa: E402


def bare_loop(model, optimizer, loader, device, iters: int, amp_dtype: Optional[torch.dtype] = None) -> int:
    """What a user writes by hand: forward (under autocast to ``amp_dtype`` when given), sum the losses,
    backward, step. Returns images seen. ``loader`` may yield batches already on ``device``."""
    model.train()
    seen = 0
    for images, targets in itertools.islice(loader, iters):
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(images)
    synchronize(device)
    return seen


class TinyDetector(torch.nn.Module):
    """A detector-shaped toy for timing the loop around a step: ``model(images, targets)`` with (3, H, W)
    images and targets holding ``boxes`` (N >= 1, 4) xyxy pixels and ``labels`` (N,) returns two scalar
    losses from one small conv and one linear layer, so its forward and backward take almost no time
    and a step's wall time is mostly what the loop does around them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=3, stride=4)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out = self.head(self.conv(torch.stack(images)).mean(dim=(2, 3)))  # (B, 5): a score and a box
        boxes = torch.stack([t["boxes"].mean(dim=0) for t in targets]) / images[0].shape[-1]  # (B, 4)
        labels = torch.stack([t["labels"].float().mean() for t in targets])  # (B,)
        return {
            "classification": (out[:, 0] - labels).pow(2).mean(),
            "box_regression": (out[:, 1:] - boxes).abs().mean(),
        }


def tiny_batches(count: int, *, batch: int, size: int, device: torch.device) -> list[tuple[list, list]]:
    """``count`` random batches for :class:`TinyDetector`, already on ``device``: ``batch`` (3, size, size)
    images in [0, 1] with two xyxy boxes each."""
    generator = torch.Generator().manual_seed(0)
    box = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.2, 0.9, 0.8]]) * size
    return [
        (
            [torch.rand(3, size, size, generator=generator).to(device) for _ in range(batch)],
            [{"boxes": box.to(device), "labels": torch.tensor([1, 2]).to(device)} for _ in range(batch)],
        )
        for _ in range(count)
    ]


def forward_backward_only(model, batches, device, amp_dtype: Optional[torch.dtype] = None) -> None:
    """Forward and backward of each batch and nothing else (gradients accumulate): a step's floor."""
    model.train()
    for images, targets in batches:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            losses = model(images, targets)
        sum(losses.values()).backward()


def step_overhead(device: torch.device, *, iters: int, repeats: int, batch: int = 2, size: int = 64) -> dict:
    """Milliseconds per step of :class:`TinyDetector` on the same preloaded batches (no data loader) in
    four loops: forward + backward only, :func:`bare_loop`, ``train_one_epoch`` without and with its
    progress bar. The loops alternate (the order rotates each repeat); each figure is the median over
    ``repeats`` calls of ``iters`` steps."""
    torch.manual_seed(0)
    model = TinyDetector().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scheduler = build_scheduler(optimizer, scheduler="cosine", total_steps=10**9, steps_per_epoch=10**6)
    batches = tiny_batches(8, batch=batch, size=size, device=device)

    def feed():
        return itertools.islice(itertools.cycle(batches), iters)

    def ours(progress: bool) -> None:
        options = TrainOptions(max_iters=iters, progress=progress)
        run = Run(model=model, optimizer=optimizer, device=device, scheduler=scheduler, options=options)
        train_one_epoch(run, feed())

    loops = {
        "forward + backward only": lambda: forward_backward_only(model, feed(), device),
        "bare loop": lambda: bare_loop(model, optimizer, feed(), device, iters),
        "train_one_epoch": lambda: ours(False),
        "train_one_epoch + progress bar": lambda: ours(True),
    }
    for run in loops.values():  # warm-up: allocator, first-call paths
        run()
    times: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            synchronize(device)
            start = time.perf_counter()
            loops[name]()
            synchronize(device)
            times[name].append(1000 * (time.perf_counter() - start) / iters)
    return {name: statistics.median(values) for name, values in times.items()}


def print_overhead(device: torch.device, *, iters: int, repeats: int) -> int:
    """Print :func:`step_overhead`'s table (what it measured on and its figures); 0."""
    print(f"TinyDetector, batch 2 of 64x64, preloaded batches, {iters} steps x {repeats} repeats on {device}")
    print("\n".join(overhead_lines(step_overhead(device, iters=iters, repeats=repeats))), flush=True)
    return 0


def overhead_lines(ms: dict[str, float]) -> list[str]:
    """Markdown rows of :func:`step_overhead`'s figures: ms/step, the ms/step outside forward + backward
    and beyond the bare loop's, and each loop's time over the bare loop's."""
    floor, bare = ms["forward + backward only"], ms["bare loop"]
    lines = [
        "| loop | ms/step | outside forward + backward (ms/step) | beyond the bare loop (ms/step) | time / bare loop's |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {value:.3f} | {value - floor:.3f} | {value - bare:+.3f} | {value / bare:.2f} |"
        for name, value in ms.items()
    ]
    return lines


def synchronize(device: torch.device) -> None:
    """Wait for the queued GPU work, so that a clock read after it counts it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=64, help="synthetic training images")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per call (8; 1000 with --overhead)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed calls of each loop")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="instead: ms/step of a toy detector on preloaded batches, bare loop vs train_one_epoch",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.overhead:
        return print_overhead(device, iters=args.iters or 1000, repeats=args.repeats)
    args.iters = args.iters or 8
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
            options = TrainOptions(max_iters=args.iters, progress=True)
            run = Run(model=model, optimizer=optimizer, device=device, scheduler=scheduler, options=options)
            stats = train_one_epoch(run, loader(seed))
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
