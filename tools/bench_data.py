"""Throughput of the training data pipeline against an equivalent torchvision.transforms.v2 pipeline.

    python tools/bench_data.py                       # raccoon-voc train split, 0 and 2 workers
    python tools/bench_data.py --workers 0 --passes 1

detect-ft's pipeline is what training runs: ``DetectionDataset`` (OpenCV decode, the ``light``
albumentations preset, uint8 -> float tensor) behind ``build_loader`` (collate into lists). The
reference decodes with ``torchvision.io.decode_jpeg`` and applies v2 RandomHorizontalFlip,
RandomAffine and ColorJitter (each with the preset's probability and ranges) on ``tv_tensors``
boxes, then SanitizeBoundingBoxes and ToDtype. Both go through the same ``build_loader`` settings
and are timed alternately in one run, after one untimed pass that starts the workers and warms the
page cache. Prints images/s and the ratio detect-ft / torchvision.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

from detect_ft.data.dataset import DetectionDataset, build_loader, image_to_tensor
from detect_ft.data.load import load_split
from detect_ft.data.records import DatasetRecords
from detect_ft.data.transforms import MEAN_RGB, build_transform

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "datasets" / "raccoon-voc"


class TorchvisionDataset(Dataset):
    """The same records through torchvision: (3,H,W) float tensor in [0,1], dict(boxes, labels, image_id)."""

    def __init__(self, records: DatasetRecords):
        self.records = records
        # The ``light`` preset's steps, probabilities and ranges (detect_ft.data.transforms._light).
        self.transform = v2.Compose(
            [
                v2.RandomHorizontalFlip(p=0.5),
                v2.RandomApply(
                    [v2.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=(0.8, 1.2), fill=list(MEAN_RGB))], p=0.5
                ),
                v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)], p=0.5),
                v2.SanitizeBoundingBoxes(min_size=1.0),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records.records[index]
        image = tv_tensors.Image(decode_jpeg(read_file(record.image_path), mode=ImageReadMode.RGB))
        keep = ~record.iscrowd
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(record.boxes[keep]), format="XYXY", canvas_size=tuple(image.shape[-2:])
            ),
            "labels": torch.from_numpy(record.labels[keep]),
            "image_id": torch.tensor(record.image_id, dtype=torch.int64),
        }
        image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), target


def time_passes(dataset: Dataset, *, workers: int, batch_size: int, passes: int) -> float:
    """Images per second over ``passes`` full passes, after one untimed warm-up pass."""
    loader = build_loader(dataset, batch_size=batch_size, shuffle=True, workers=workers, seed=0)
    for _ in loader:
        pass
    count = 0
    start = time.perf_counter()
    for _ in range(passes):
        for images, _targets in loader:
            count += len(images)
    elapsed = time.perf_counter() - start
    del loader  # ends the persistent workers before the next pipeline starts its own
    return count / elapsed


def time_stages(records: DatasetRecords, ours: DetectionDataset, reference: TorchvisionDataset) -> None:
    """Per-image milliseconds of decode and of augment + to-float alone, in this process, no loader."""
    paths = [r.image_path for r in records.records]
    timings = {}
    start = time.perf_counter()
    arrays = [ours.load(i) for i in range(len(paths))]
    timings["decode (cv2.imread + BGR->RGB)"] = time.perf_counter() - start
    start = time.perf_counter()
    tensors = [decode_jpeg(read_file(p), mode=ImageReadMode.RGB) for p in paths]
    timings["decode (torchvision decode_jpeg)"] = time.perf_counter() - start
    start = time.perf_counter()
    for image, boxes, labels in arrays:
        image_to_tensor(ours.transform(image, boxes, labels)[0])
    timings["augment light + to float (albumentations)"] = time.perf_counter() - start
    start = time.perf_counter()
    for tensor, (_, boxes, labels) in zip(tensors, arrays):
        box_tensor = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=tensor.shape[-2:])
        reference.transform(tv_tensors.Image(tensor), {"boxes": box_tensor, "labels": torch.from_numpy(labels)})
    timings["augment + to float (torchvision v2)"] = time.perf_counter() - start
    for name, seconds in timings.items():
        print(f"| {name} | {1000 * seconds / len(paths):.2f} ms |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="VOC dataset folder (default: raccoon-voc)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="worker counts (none: skip)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the split per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements per pipeline")
    parser.add_argument("--stages", action="store_true", help="also time decode and augmentation separately")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads of the main process (workers always use 1)"
    )
    args = parser.parse_args(argv)
    # torchvision 0.29 deprecates its decoders in favour of torchcodec; the reference still uses them.
    warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
    # With workers=0 the pipelines run in this process; on a busy machine torch's spinning OpenMP threads
    # slowed the torchvision pipeline 40x at 2 threads, so by default it gets one thread, as workers do.
    torch.set_num_threads(args.threads)

    if not Path(args.root).is_dir():
        print(f"dataset folder {args.root} not found; pass --root", file=sys.stderr)
        return 2
    records, _findings = load_split(format="voc", root=args.root, split=args.split)
    ours = DetectionDataset(records, build_transform("light", train=True))
    reference = TorchvisionDataset(records)
    print(
        f"{len(records)} images ({records.num_boxes} boxes) from {args.root} split {args.split}; "
        f"batch {args.batch_size}, {args.passes} passes x {args.repeats} repeats; {os.cpu_count()} CPUs, "
        f"{args.threads} main-process torch threads; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, python {platform.python_version()}"
    )
    print("| workers | detect-ft img/s | torchvision v2 img/s | ratio | load avg |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for workers in args.workers:
        ours_runs, ref_runs = [], []
        for _ in range(args.repeats):
            ours_runs.append(time_passes(ours, workers=workers, batch_size=args.batch_size, passes=args.passes))
            ref_runs.append(time_passes(reference, workers=workers, batch_size=args.batch_size, passes=args.passes))
        ours_ips, ref_ips = statistics.median(ours_runs), statistics.median(ref_runs)
        print(
            f"| {workers} | {ours_ips:.1f} | {ref_ips:.1f} | {ours_ips / ref_ips:.2f}x | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
    if args.stages:
        print("| stage (per image, 0 workers) | time |")
        print("| --- | ---: |")
        time_stages(records, ours, reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
