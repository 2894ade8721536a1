"""Where the trainer's time goes on a GPU: the bare step, the data loader alone and the trainer end to end.

    python tools/bench_gpu.py                                  # CUDA: 3 models x batch 16, 64 x fp32, AMP
    python tools/bench_gpu.py --device cpu --tiny --threads 1  # the script's code paths on a CPU (~1-2 min)
    python tools/bench_gpu.py --models fasterrcnn_mobilenet_v3_large_fpn --batches 16 --profile traces

For each model, batch size and precision (``fp32``; ``amp``: what ``train.amp=true`` picks, bf16 where
the GPU supports it, else fp16 + GradScaler) it runs ``train(cfg)`` on synthetic images (or
``--voc-root``'s train split) for ``--epochs`` epochs of ``--iters`` batches: random weights, no
validation, the backbone stages and BatchNorm that a fine-tune from pretrained weights trains (never
frozen for the first epochs), the model's recipe otherwise. A hook clocks it:

- trainer: steady-state img/s (the batches after each later epoch's first), the seconds an epoch takes
  to its first batch beyond a steady step (loader workers starting), the first epoch's extra seconds
  over a later epoch of as many batches (cuDNN autotuning, allocator growth), and the set-up before it;
- bare step: then, with the trained model and optimizer, forward + backward + optimizer step on one
  batch already on the device, repeated (``bench_train.bare_loop``, under the same autocast; no
  GradScaler, which only GPUs without bf16 would have the trainer use);
- loader: the trainer's own DataLoader alone (``train.workers``, pinned memory on CUDA), img/s over
  ``--loader-passes`` epochs, a new loader each epoch as the trainer builds them.

trainer/bare near 1 means the loop adds little; loader/bare below 1 means the loader holds the trainer
back. ``--profile DIR`` writes a torch profiler trace (Chrome JSON; CPU and CUDA activity) of a few
trainer steps per row and a table of the top ops. Last, the loop's own cost per step on a toy model
(``bench_train.step_overhead``). On CUDA every figure's clock is read after ``torch.cuda.synchronize()``;
the trainer's per-batch clock is not (it would stop the CPU from queueing ahead), and the trainer
syncs once a batch for the loss values anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]  # this checkout's detect_ft, and bench_train beside this file

import bench_train  # noqa: E402
import torch  # noqa: E402

from detect_ft.config.schema import TrainConfig, load_config  # noqa: E402
from detect_ft.data.synthetic import make_synthetic_dataset  # noqa: E402
from detect_ft.engine.fit import train_one_epoch  # noqa: E402
from detect_ft.engine.hooks import Hook  # noqa: E402
from detect_ft.engine.run import Run, TrainOptions  # noqa: E402
from detect_ft.engine.trainer import train  # noqa: E402
from detect_ft.models.registry import MODELS as MODELS_REGISTRY  # noqa: E402

MODELS = ("ssdlite320_efficientnet_lite0", "fasterrcnn_efficientnet_lite0_fpn", "fasterrcnn_mobilenet_v3_large_fpn")
PRECISIONS = ("fp32", "amp")
# --tiny: small inputs and few steps, to check the script's code paths on a CPU in a minute or two.
TINY = dict(
    batches="2",
    epochs=2,
    iters=3,
    bare_iters=3,
    warmup=1,
    loader_passes=2,
    image_size="160x120",
    overhead_iters=200,
    overhead_repeats=3,
)
TINY_SET = ["model.min_size=128", "model.max_size=128"]
DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class EpochClock:
    """One epoch as the trainer ran it: ``began`` (``time.perf_counter()`` before its loader was built),
    each batch's end, and the images it trained."""

    began: float
    step_ends: list[float] = field(default_factory=list)
    images: int = 0


def summarize_epochs(epochs: list[EpochClock]) -> dict[str, float]:
    """The trainer's figures from 2 or more epochs of 2 or more batches each.

    ``step_s``: seconds per batch after an epoch's first (median over the epochs after the first);
    ``img_s``: images per second at that pace; ``epoch_start_s``: an epoch's seconds to its first
    batch's end beyond one steady step (median over the same epochs); ``first_extra_s``: the first
    epoch's seconds beyond what a later epoch of as many batches takes at those figures.
    """
    later = epochs[1:]
    if not later or any(len(e.step_ends) < 2 for e in epochs):
        raise ValueError("the trainer's figures need 2 or more epochs of 2 or more batches each")
    step_s = statistics.median([(e.step_ends[-1] - e.step_ends[0]) / (len(e.step_ends) - 1) for e in later])
    images_per_step = statistics.median([e.images / len(e.step_ends) for e in later])
    start_s = statistics.median([e.step_ends[0] - e.began - step_s for e in later])
    first = epochs[0]
    return {
        "step_s": step_s,
        "img_s": images_per_step / step_s,
        "epoch_start_s": start_s,
        "first_extra_s": (first.step_ends[-1] - first.began) - (start_s + step_s * len(first.step_ends)),
    }


class Clock(Hook):
    """Reads the clock at each epoch's start and each batch's end; after a run that did not raise, calls
    ``measure(run)`` and keeps what it returns in ``results``."""

    def __init__(self, measure: Callable[[Any], dict[str, Any]]) -> None:
        self.measure = measure
        self.epochs: list[EpochClock] = []
        self.results: dict[str, Any] = {}

    def before_epoch(self, run) -> None:
        self.epochs.append(EpochClock(began=time.perf_counter()))

    def after_step(self, run) -> None:
        self.epochs[-1].step_ends.append(time.perf_counter())

    def after_epoch(self, run) -> None:
        self.epochs[-1].images = run.stats["images"]

    def after_train(self, run) -> None:
        if run.error is None:
            self.results = self.measure(run)


def after_training(run, args: argparse.Namespace, trace: Optional[Path]) -> dict[str, Any]:
    """With the trained run: the bare step's and the loader's img/s, peak GPU memory, and a profile."""
    device, amp_dtype = run.device, run.options.amp_dtype
    loader = run.make_loader(0)
    images, targets = next(iter(loader))  # pinned on CUDA by build_loader, as the trainer's batches are
    del loader
    batch = (
        [image.to(device, non_blocking=True) for image in images],
        [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets],
    )
    bench_train.bare_loop(run.model, run.optimizer, itertools.repeat(batch), device, args.warmup, amp_dtype)
    start = time.perf_counter()  # bare_loop ends with a synchronize, so nothing queued is left
    seen = bench_train.bare_loop(run.model, run.optimizer, itertools.repeat(batch), device, args.bare_iters, amp_dtype)
    results = {"bare_img_s": seen / (time.perf_counter() - start), "dtype": DTYPE_NAMES.get(amp_dtype, str(amp_dtype))}
    results["loader_img_s"] = time_loader(run.make_loader, passes=args.loader_passes, iters=args.iters)
    cuda = device.type == "cuda"
    results["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else math.nan
    if trace is not None:
        trace.with_suffix(".txt").write_text(profile_steps(run, trace, args.profile_steps) + "\n")
    return results


def time_loader(make_loader: Callable[[int], Any], *, passes: int, iters: int) -> float:
    """Images per second of ``passes`` epochs of ``iters`` batches from ``make_loader(epoch)``; a new
    loader each epoch, as the trainer builds them, so worker start-up and shutdown count."""
    count = 0
    start = time.perf_counter()
    for epoch in range(passes):
        loader = make_loader(epoch)
        for images, _targets in itertools.islice(loader, iters):
            count += len(images)
        del loader  # its workers end here, as the trainer's do after each epoch
    return count / (time.perf_counter() - start)


def profile_steps(run, path: Path, steps: int) -> str:
    """Profile ``steps`` batches of ``train_one_epoch`` (after one warm-up batch) on the run's loader; write the Chrome trace to ``path`` and return the table of the top ops."""
    from torch.profiler import ProfilerActivity, profile, schedule

    cuda = run.device.type == "cuda"
    tables: list[str] = []

    def export(profiler) -> None:
        profiler.export_chrome_trace(str(path))
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        tables.append(profiler.key_averages().table(sort_by=sort, row_limit=20))

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=steps), on_trace_ready=export) as p:

        class ThenStep(Hook):
            def after_step(self, _run: Run) -> None:
                p.step()

        options = TrainOptions(amp_dtype=run.options.amp_dtype, max_iters=steps + 1, progress=False)
        profiled = Run(
            model=run.model,
            optimizer=run.optimizer,
            device=run.device,
            scheduler=run.scheduler,
            scaler=run.scaler,
            options=options,
        )
        train_one_epoch(profiled, run.make_loader(0), [ThenStep()])
    return tables[0] if tables else f"no trace: the loader had fewer than {steps + 1} batches"


def as_if_pretrained(model: str) -> list[str]:
    """Overrides that make a model built from random weights train what a fine-tune from its pretrained
    weights trains: the recipe's or the registry's trainable backbone stages and BatchNorm freezing
    (random weights would otherwise unfreeze every stage and every BatchNorm). [] for an unknown name."""
    spec = MODELS_REGISTRY.get(model)
    if spec is None:
        return []  # load_config names the allowed models
    layers = dict(spec.recipe).get("model.trainable_backbone_layers", spec.default_trainable)
    return [f"model.trainable_backbone_layers={layers}", f"model.frozen_bn={str(spec.frozen_bn).lower()}"]


def trainer_overrides(model: str, batch: int, precision: str, data: list[str], args, out: Path) -> list[str]:
    """One row's ``key=value`` config: random weights training the layers pretrained ones would, the
    model's recipe except that nothing is frozen for epochs, no validation, ``args.epochs`` epochs of
    ``args.iters`` batches, then ``--set``'s overrides."""
    return [
        f"model.name={model}",
        "model.weights=none",
        *as_if_pretrained(model),
        *data,
        f"train.device={args.device}",
        f"train.amp={str(precision == 'amp').lower()}",
        f"train.batch_size={batch}",
        f"train.epochs={args.epochs}",
        f"train.max_iters_per_epoch={args.iters}",
        "train.freeze_backbone_epochs=0",
        "train.freeze_backbone_fraction=0",
        f"output.dir={out}",
        *([f"train.workers={args.workers}"] if args.workers is not None else []),
        *args.set,
    ]


def bench_row(model: str, batch: int, precision: str, data: list[str], args, tmp: Path) -> dict[str, Any]:
    """Train one row (its output in a folder under ``tmp``, removed after) and return its figures."""
    name = f"{model}_b{batch}_{precision}"
    trace = Path(args.profile) / f"{name}.json" if args.profile else None
    clock = Clock(lambda run: after_training(run, args, trace))
    out = tmp / name
    cfg = load_config(None, trainer_overrides(model, batch, precision, data, args, out))
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    said = io.StringIO()  # the trainer's banner lines, shown only when the row fails
    called = time.perf_counter()
    try:
        with contextlib.redirect_stdout(said), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Changing trainable_backbone_layers")  # random weights
            train(cfg, progress=False, hooks=[clock])
    except BaseException:
        print(said.getvalue()[-2000:], file=sys.stderr)
        raise
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {**summarize_epochs(clock.epochs), **clock.results, "setup_s": clock.epochs[0].began - called}


HEADER = (
    "| model | precision | batch | bare step img/s | loader img/s | trainer img/s | trainer/bare | loader/bare "
    "| epoch start s | first epoch extra s | set-up s | peak GiB |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def row_line(model: str, batch: int, precision: str, r: dict[str, Any]) -> str:
    """One markdown row of :func:`bench_row`'s figures."""
    bare = r["bare_img_s"]
    shown = precision if precision == r["dtype"] else f"{precision} ({r['dtype']})"
    peak = "-" if math.isnan(r["peak_gib"]) else f"{r['peak_gib']:.2f}"
    return (
        f"| {model} | {shown} | {batch} | {bare:.1f} | {r['loader_img_s']:.1f} | {r['img_s']:.1f} "
        f"| {r['img_s'] / bare:.2f} | {r['loader_img_s'] / bare:.2f} | {r['epoch_start_s']:.2f} "
        f"| {r['first_extra_s']:.2f} | {r['setup_s']:.2f} | {peak} |"
    )


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line; ``--tiny`` changes the defaults (flags given explicitly still win)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    p.add_argument("--models", default=",".join(MODELS), help="comma list of model names")
    p.add_argument("--batches", default="16,64", help="comma list of batch sizes")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma list of fp32, amp (amp: CUDA only)")
    p.add_argument("--epochs", type=int, default=3, help="trainer epochs per row (2 or more)")
    p.add_argument("--iters", type=int, default=8, help="batches per trainer epoch and per loader pass (2 or more)")
    p.add_argument("--bare-iters", type=int, default=10, help="timed bare steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed bare steps before them")
    p.add_argument("--loader-passes", type=int, default=2, help="loader epochs timed per row")
    p.add_argument(
        "--workers", type=int, default=None, help=f"loader workers (default train.workers={TrainConfig().workers})"
    )
    p.add_argument("--image-size", default="480x360", help="synthetic images, WIDTHxHEIGHT")
    p.add_argument("--voc-root", default="", help="train on this VOC folder's train split instead of synthetic images")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another config override, every row")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument(
        "--profile", default="", metavar="DIR", help="write a profiler trace per row into DIR (new or empty)"
    )
    p.add_argument("--profile-steps", type=int, default=3, help="batches each trace covers")
    p.add_argument(
        "--overhead-iters", type=int, default=500, help="toy-model steps per call of the overhead check (0: skip)"
    )
    p.add_argument("--overhead-repeats", type=int, default=5)
    p.add_argument(
        "--tiny",
        action="store_true",
        help="small inputs and few steps: " + ", ".join(f"{k}={v}" for k, v in TINY.items()),
    )
    if argv is None:
        argv = sys.argv[1:]
    if "--tiny" in argv:
        p.set_defaults(**TINY)
    args = p.parse_args(argv)
    if args.tiny:
        args.set = TINY_SET + args.set
    if args.epochs < 2 or args.iters < 2:
        p.error("--epochs and --iters must be 2 or more: the steady state is read from the epochs after the first")
    if unknown := set(args.precisions.split(",")) - set(PRECISIONS):
        p.error(f"--precisions: {', '.join(sorted(unknown))} unknown; use {', '.join(PRECISIONS)}")
    try:
        args.batch_list = [int(b) for b in args.batches.split(",")]
        args.size = tuple(int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        p.error(f"--batches {args.batches!r} / --image-size {args.image_size!r}: use e.g. 16,64 and 480x360")
    if args.profile and Path(args.profile).exists() and any(Path(args.profile).iterdir()):
        p.error(f"--profile {args.profile}: the folder is not empty; name a new one")
    return args


def training_data(args: argparse.Namespace, tmp: Path) -> tuple[list[str], str]:
    """The rows' ``data.*`` overrides and a line that describes the data."""
    if args.voc_root:
        return ["data.format=voc", f"data.root={args.voc_root}", "data.train=train"], f"{args.voc_root} train split"
    # every epoch (and a profiled one) gets its full batches at the largest batch size
    count = max(args.batch_list) * max(args.iters, args.profile_steps + 1 if args.profile else 0)
    started = time.perf_counter()
    make_synthetic_dataset(tmp / "data", num_train=count, num_val=0, image_size=args.size, seed=0)
    return (
        ["data.format=coco", f"data.root={tmp / 'data'}", "data.train=train.json"],
        f"{count} synthetic {args.image_size} images, generated in {time.perf_counter() - started:.1f}s",
    )


def describe_machine(device: torch.device) -> str:
    """One line: the GPU (or CPU), torch's version and threads, the CPU count."""
    if device.type == "cuda":
        where = (
            f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}"
        )
    else:
        where = "CPU"
    return f"{where}; torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"


def main(argv: Optional[list[str]] = None) -> int:
    """Print the table (a row as each finishes), then the overhead check; 1 if a row failed, 2 without CUDA."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device is visible; pass --device cpu (with --tiny for a quick check)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    precisions = args.precisions.split(",")
    if device.type != "cuda" and "amp" in precisions:
        precisions.remove("amp")
        print("amp rows skipped: the trainer trains in fp32 off CUDA (train.amp applies to CUDA only)")
    workers = args.workers if args.workers is not None else TrainConfig().workers
    failures = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        data, data_line = training_data(args, Path(tmp_name))
        print(
            f"{describe_machine(device)}\ndata: {data_line}; {workers} loader workers; {args.epochs} epochs x {args.iters} batches"
        )
        print(HEADER, flush=True)
        for batch, model, precision in itertools.product(args.batch_list, args.models.split(","), precisions):
            try:
                line = row_line(model, batch, precision, bench_row(model, batch, precision, data, args, Path(tmp_name)))
            except Exception as exc:  # report and go on: one failing row (out of memory) must not hide the rest
                failures += 1
                line = f"| {model} | {precision} | {batch} | FAILED: {type(exc).__name__}: {str(exc)[:300]} |"
            print(line, flush=True)
    if args.overhead_iters:
        print("\nthe loop's own cost per step:")
        bench_train.print_overhead(device, iters=args.overhead_iters, repeats=args.overhead_repeats)
    if args.profile:
        print(f"\nprofiler traces and top-op tables: {args.profile}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
