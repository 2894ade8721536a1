"""Time the image-file check training runs before its first step, against a full decode of every image.

    python tools/bench_check.py                                  # ../shared/datasets/aquarium, train + val
    python tools/bench_check.py --root ../shared/datasets/coco128 --repeat 5

The cheap check is what ``train`` runs on the training split (``load_checked_split`` without
``decode``): the file exists, its header parses (size, EXIF orientation), a JPEG ends with its end
marker / a PNG with IEND (last 64 KiB read), and the size agrees with the annotation. The full decode
is what ``check-data`` (without ``--fast``) and the validation split run. ``--repeat`` checks the
same images that many times over, to time a set of a few thousand from the page cache. Prints
seconds and images/s for the annotation reading and for each file check (the median of ``--runs``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from detect_ft.data.checks.doctor import check_images
from detect_ft.data.load import load_split

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "aquarium"


def _timed(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="a VOC dataset folder")
    parser.add_argument("--splits", default="train,val", help="comma-separated VOC split names")
    parser.add_argument("--repeat", type=int, default=1, help="check every image this many times over")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per check (the median is shown)")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"{args.root} is absent; pass --root", file=sys.stderr)
        return 2
    start = time.perf_counter()
    loaded = [load_split(format="voc", root=args.root, split=s)[0] for s in args.splits.split(",")]
    reading = time.perf_counter() - start
    records = [r for split in loaded for r in split.records] * args.repeat
    n = len(records)
    print(f"{args.root}: {n} images ({args.repeat}x), Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"annotations read in {reading:.2f} s (first run)")
    first = _timed(lambda: check_images(records), 1)
    print(f"cheap check, first run: {first:.2f} s ({n / first:.0f} img/s)")
    for what, decode in (("cheap check (training)", False), ("full decode (check-data)", True)):
        seconds = _timed(lambda: check_images(records, decode=decode), args.runs)
        print(f"{what}: {seconds:.2f} s ({n / seconds:.0f} img/s, {1000 * seconds / n:.2f} ms/img)")
    statuses = check_images(records)
    bad = sum(status.problem is not None for status in statuses)
    print(f"files with a problem: {bad}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
