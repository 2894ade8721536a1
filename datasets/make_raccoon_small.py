#!/usr/bin/env python3
"""Write the downscaled raccoon set that ships in the repository (datasets/raccoon-small) from the full one.

    python datasets/make_raccoon_small.py                    # ../shared/datasets/raccoon-voc -> datasets/raccoon-small

The full set (200 photos, MIT licence, by Dat Tran) lies beside the repository. This keeps its VOC
layout and its train/val split, scales every photo so that its long side is ``--long-side`` px (never
up), re-encodes it as JPEG, scales the boxes with it (read and written through detect-ft's own VOC
adapter and writer), and copies the LICENSE with an attribution README. It refuses to write into a
folder it did not make, and checks the size limit (5 MB) at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from detect_ft.data.formats.voc import voc_xml
from detect_ft.data.image import read_image
from detect_ft.data.load import load_split
from detect_ft.data.records import ImageRecord
from detect_ft.utils.atomic_io import write_text_atomic
from detect_ft.utils.errors import DetectFTError

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "datasets" / "raccoon-voc"
TARGET = REPO / "datasets" / "raccoon-small"
MAX_BYTES = 5 * 1024 * 1024
MARKER = ".made-by-make_raccoon_small"

README = """# raccoon-small

The raccoon photos of Dat Tran's raccoon dataset (MIT licence, see LICENSE; the original is
https://github.com/datitran/raccoon_dataset), downscaled for detect-ft's demo so that a fresh clone
can fine-tune on real photos offline: {images} JPEG photos (long side {long_side} px, quality
{quality}), {boxes} boxes of one class, `raccoon`, in Pascal VOC layout with the full set's split
(ImageSets/Main/train.txt: {train} ids, val.txt: {val} ids).

Made by `python datasets/make_raccoon_small.py` from the full-size VOC copy; do not edit by hand.
"""


def scaled(record: ImageRecord, scale: float, file_name: str) -> ImageRecord:
    """``record`` for the image resized by ``scale``: boxes (xyxy pixels) and size scaled with it."""
    width, height = round(record.width * scale), round(record.height * scale)
    boxes = np.clip(record.boxes * scale, 0, [width, height, width, height])
    return ImageRecord(
        image_path=file_name,
        width=width,
        height=height,
        boxes=boxes,
        labels=record.labels,
        iscrowd=record.iscrowd,
        difficult=record.difficult,
        file_name=file_name,
    )


def make(source: Path, target: Path, *, long_side: int, quality: int) -> dict[str, int]:
    if target.exists() and not (target / MARKER).exists():
        raise DetectFTError(f"{target} exists and was not made by this script; remove it or pass another --out")
    if target.exists():
        shutil.rmtree(target)
    counts = {"images": 0, "boxes": 0}
    for split in ("train", "val"):
        records, findings = load_split(format="voc", root=source, split=split, classes=["raccoon"])
        if findings:
            raise DetectFTError(f"{source}: split {split} has problems: {findings[0]}")
        ids = []
        for record in records.records:
            image = read_image(record.image_path)
            scale = min(1.0, long_side / max(record.width, record.height))
            small = cv2.resize(
                image, (round(record.width * scale), round(record.height * scale)), interpolation=cv2.INTER_AREA
            )
            name = Path(record.image_path).stem
            out = target / "JPEGImages" / f"{name}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
            small_record = scaled(record, scale, f"{name}.jpg")
            write_text_atomic(target / "Annotations" / f"{name}.xml", voc_xml(small_record, ["raccoon"], f"{name}.jpg"))
            ids.append(name)
            counts["boxes"] += small_record.num_boxes
        write_text_atomic(target / "ImageSets" / "Main" / f"{split}.txt", "".join(i + "\n" for i in ids))
        counts[split] = len(ids)
        counts["images"] += len(ids)
    shutil.copyfile(source / "LICENSE", target / "LICENSE")
    write_text_atomic(target / "README.md", README.format(long_side=long_side, quality=quality, **counts))
    (target / MARKER).write_text("")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="the full raccoon-voc folder")
    parser.add_argument("--out", type=Path, default=TARGET, help="output folder (datasets/raccoon-small)")
    parser.add_argument("--long-side", type=int, default=416)
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
    args = parser.parse_args(argv)
    if not (args.source / "Annotations").is_dir():
        print(f"error: {args.source} is not the raccoon-voc folder (no Annotations/); pass --source", file=sys.stderr)
        return 2
    try:
        counts = make(args.source, args.out, long_side=args.long_side, quality=args.quality)
    except DetectFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {counts['images']} images, {counts['boxes']} boxes to {args.out}: {size / 1e6:.2f} MB")
    if size > MAX_BYTES:
        print(
            f"error: {size} bytes is over the {MAX_BYTES} byte limit; lower --quality or --long-side", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
