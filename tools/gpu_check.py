"""GPU check of the trainer: throughput and peak memory with AMP on and off, then one end-to-end run.

    python tools/gpu_check.py                    # about 2-3 minutes on one recent GPU
    python tools/gpu_check.py --iters 50 --modes off,amp

For ssdlite320_mobilenet_v3_large and fasterrcnn_mobilenet_v3_large_fpn (random weights, synthetic data
generated on the fly) it runs ``train_one_epoch`` for ``--iters`` timed iterations after a warm-up in each
precision mode: ``off`` (fp32), ``amp`` (what train.amp=true picks: bf16 where supported, else fp16 with
a GradScaler) and ``fp16`` (fp16 + GradScaler forced, to exercise the scaler on bf16 GPUs too). It prints
img/s, peak GPU memory and the mean loss (finite = the precision mode trains). Last, it runs the whole
``train(cfg)`` for 2 short epochs on the GPU with AMP and EMA, validation and checkpoints included.
Without a CUDA device it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

MODELS = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn")


def throughput(
    model_name: str, mode: str, dataset, *, batch: int, iters: int, warmup: int, workers: int, device: str = "cuda"
) -> dict:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from detect_ft.data.dataset import collate_detection
    from detect_ft.engine.fit import train_one_epoch
    from detect_ft.engine.optim import build_optimizer, build_scheduler
    from detect_ft.engine.run import Run, TrainOptions
    from detect_ft.models import build_model

    device = torch.device(device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(model_name, dataset.records.num_classes, "none", dataset.records.class_names).to(device)
    optimizer = build_optimizer(model, model_name, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = build_scheduler(
        optimizer, scheduler="cosine", total_steps=warmup + iters, steps_per_epoch=iters, warmup_iters=warmup
    )
    if mode == "off":
        amp_dtype = None
    elif mode == "fp16":
        amp_dtype = torch.float16
    else:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def loader(n: int) -> DataLoader:
        # Sampling with replacement gives any number of batches from a small synthetic set, decoded each time.
        sampler = RandomSampler(dataset, replacement=True, num_samples=n * batch)
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            pin_memory=cuda,
            collate_fn=collate_detection,
            persistent_workers=False,
        )

    options = TrainOptions(amp_dtype=amp_dtype, max_nonfinite=10**9, progress=False)
    run = Run(model=model, optimizer=optimizer, device=device, scheduler=scheduler, scaler=scaler, options=options)
    train_one_epoch(run, loader(warmup))  # cudnn.benchmark tuning, allocator
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    stats = train_one_epoch(run, loader(iters))
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return {
        "img_s": stats["img_s"],
        "peak_gib": peak,
        "loss": stats["loss"],
        "skipped": stats["skipped_steps"],
        "dtype": str(amp_dtype).replace("torch.", ""),
    }


def end_to_end(tmp: Path, device: str = "cuda") -> str:
    """train(cfg) on the GPU: 2 epochs of 5 iterations with AMP, EMA, validation, checkpoints; then resume."""
    import torch

    from detect_ft.config.schema import load_config
    from detect_ft.engine.trainer import train
    from detect_ft.models import load_detector

    overrides = [
        "model.name=ssdlite320_mobilenet_v3_large",
        "model.weights=none",
        f"data.root={tmp / 'data'}",
        "data.train=train.json",
        "data.val=val.json",
        f"train.device={device}",
        "train.amp=true",
        "train.ema=true",
        "train.epochs=2",
        "train.batch_size=8",
        "train.max_iters_per_epoch=5",
        "train.workers=2",
        "train.channels_last=true",
        f"output.dir={tmp / 'run'}",
    ]
    run = train(load_config(None, overrides), progress=False)
    train(load_config(None, overrides + ["train.epochs=3", "train.resume=auto"]), progress=False)
    model, meta = load_detector(run / "checkpoints" / "last.pt")
    assert meta["epoch"] == 3, meta["epoch"]
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3, rows
    scaler = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["scaler"]
    scaler_text = "saved" if scaler else "none (no fp16 in this run)"
    return f"ok: 3 epochs (2 + resume 1), metrics rows {len(rows)}, scaler state {scaler_text}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--modes", default="off,amp,fp16", help="comma list of off, amp, fp16")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="check this script's code paths on the CPU (fp32, 2 iterations); prints no GPU figures",
    )
    args = parser.parse_args()
    if args.cpu_dry_run:
        args.iters, args.warmup, args.batch, args.workers, args.modes = 2, 1, 2, 0, "off"
    return args


def synthetic_train_set(tmp: Path):
    """A DetectionDataset (light training augmentation) of 256 synthetic 480x360 images written under ``tmp/data``."""
    from detect_ft.data.dataset import DetectionDataset
    from detect_ft.data.split import SplitSpec, load_checked_split
    from detect_ft.data.synthetic import make_synthetic_dataset
    from detect_ft.data.transforms import build_transform

    started = time.perf_counter()
    make_synthetic_dataset(tmp / "data", num_train=256, num_val=32, image_size=(480, 360), seed=0)
    records, _ = load_checked_split(SplitSpec(format="coco", root=tmp / "data"), "train.json", None)
    print(f"data: {len(records)} synthetic 480x360 images, generated in {time.perf_counter() - started:.1f}s\n")
    return DetectionDataset(records, build_transform("light", train=True))


def throughput_table(args: argparse.Namespace, dataset, device: str) -> int:
    """Print the throughput table, one row per model and precision mode; the number of modes that failed
    or did not train (loss not finite, or every step skipped)."""
    import torch

    print("| model | precision | batch | img/s | peak GPU memory (GiB) | mean loss |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    failures = 0
    for model_name in args.models.split(","):
        for mode in args.modes.split(","):
            try:
                r = throughput(
                    model_name,
                    mode,
                    dataset,
                    batch=args.batch,
                    iters=args.iters,
                    warmup=args.warmup,
                    workers=args.workers,
                    device=device,
                )
            except Exception as exc:  # report and go on: one failing mode must not hide the others
                failures += 1
                print(f"| {model_name} | {mode} | {args.batch} | FAILED: {type(exc).__name__}: {exc} | | |")
                continue
            ok = math.isfinite(r["loss"]) and r["skipped"] < args.iters
            failures += not ok
            loss_text = f"{r['loss']:.3f}" + ("" if ok else " NOT FINITE")
            print(
                f"| {model_name} | {mode} ({r['dtype']}) | {args.batch} | {r['img_s']:.1f} "
                f"| {r['peak_gib']:.2f} | {loss_text} |"
            )
            if device == "cuda":
                torch.cuda.empty_cache()
    return failures


def main() -> int:
    args = parse_args()

    import torch

    device = "cpu" if args.cpu_dry_run else "cuda"
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA device is visible; tools/gpu_check.py needs a GPU (run the CPU tests instead)",
            file=sys.stderr,
        )
        return 2
    torch.backends.cudnn.benchmark = True
    if args.cpu_dry_run:
        print("CPU dry run: checks the script only; the figures below are not GPU figures")
    else:
        print(
            f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"bf16 {torch.cuda.is_bf16_supported()}"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        failures = throughput_table(args, synthetic_train_set(tmp), device)
        print(f"\nend-to-end train() on {device} with AMP + EMA + channels_last (CUDA only), then resume:")
        try:
            print("  " + end_to_end(tmp, device))
        except Exception as exc:
            failures += 1
            print(f"  FAILED: {type(exc).__name__}: {exc}")
    print(f"\ntotal {time.perf_counter() - started:.0f}s, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
