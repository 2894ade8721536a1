#!/usr/bin/env python3
"""Write a synthetic shapes dataset (see detect_ft.data.synthetic) and print the config keys for it.

python datasets/make_synthetic.py                        # data/synthetic, COCO, circle/square/triangle
python datasets/make_synthetic.py --format voc --out data/synthetic-voc --classes star,ring,cross,hexagon
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detect_ft.data.synthetic import SHAPES, make_synthetic_dataset
from detect_ft.utils.errors import DetectFTError

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"coco": ("train.json", "val.json"), "voc": ("train", "val"), "yolo": ("train", "val")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "data" / "synthetic"), help="output folder (data/synthetic)")
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation images")
    parser.add_argument("--size", default="320", help="image size: N or WxH (default 320)")
    parser.add_argument("--classes", default="circle,square,triangle", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--format", choices=sorted(SPLITS), default="coco")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        image_size = size[0] if len(size) == 1 else (size[0], size[1])
    except ValueError:
        parser.error(f"--size {args.size!r}: use N or WxH, e.g. 320 or 416x320")
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    try:
        out = make_synthetic_dataset(
            args.out,
            num_train=args.train,
            num_val=args.val,
            image_size=image_size,
            classes=classes,
            format=args.format,
            seed=args.seed,
        )
    except DetectFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train, val = SPLITS[args.format]
    print(f"wrote {args.train} training and {args.val} validation images to {out}")
    print(
        f"config: data.format={args.format} data.root={out} data.train={train} data.val={val} "
        f"data.classes=[{','.join(classes)}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
