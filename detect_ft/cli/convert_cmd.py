"""``detect-ft convert``: rewrite a dataset's annotations in another format (VOC/YOLO/COCO)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a dataset between VOC, YOLO and COCO layouts (voc->coco, yolo->coco, coco->yolo, ...)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="src", choices=("voc", "yolo", "coco"), required=True, help="source format")
    parser.add_argument("--to", dest="dst", choices=("coco", "yolo", "voc"), required=True, help="target format")
    parser.add_argument("--root", default=".", help="source dataset folder (split paths are relative to it)")
    parser.add_argument(
        "--split",
        action="append",
        required=True,
        help="a split as data.train would name it (coco: JSON, voc: split name or list file, yolo: folder or "
        "list file); repeat for several; the output split is named after its file or folder stem",
    )
    parser.add_argument("--images", default="", help="coco source only: folder that file_name is relative to")
    parser.add_argument("--classes", default="", help="comma-separated class list selecting and ordering the classes")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--image-mode",
        choices=("copy", "symlink", "none"),
        default="copy",
        help="how images reach the output: copy, symlink, or none (coco only: file_name points at the originals)",
    )
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="also convert images whose annotated path is absolute or leaves --root (refused by default)",
    )


def split_name(src: str, split: str) -> str:
    """The output split name: ``instances_val2017.json`` -> ``instances_val2017``, ``train`` -> ``train``."""
    return Path(split.rstrip("/")).stem or "split"


def run(args: argparse.Namespace) -> int:
    from detect_ft.data.convert import convert_split
    from detect_ft.utils.errors import DataError

    if args.image_mode == "none" and args.dst != "coco":
        raise DataError(f"--image-mode none works only with --to coco; {args.dst} needs the images in its layout")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    written = {}
    for split in args.split:
        name = split_name(args.src, split)
        if name in written:
            raise DataError(f"--split {split}: a split named '{name}' was already written; rename one of them")
        path, records, findings = convert_split(
            src_format=args.src,
            root=args.root,
            split=split,
            dst_format=args.dst,
            out_dir=args.out,
            name=name,
            images=args.images,
            classes=classes,
            image_mode=args.image_mode,
            allow_outside_root=args.allow_outside_root,
        )
        classes = classes or records.class_names  # later splits keep the first split's class order
        written[name] = path
        crowd = sum(int(r.iscrowd.sum()) for r in records.records)
        print(f"{split} -> {path}: {len(records)} images, {records.num_boxes} boxes, classes {records.class_names}")
        if crowd and args.dst == "yolo":
            print(f"  {crowd} crowd boxes left out (YOLO has no ignore regions)")
        if crowd and args.dst == "voc":
            print(f"  {crowd} crowd boxes written as difficult")
        if findings:
            print(f"  {len(findings)} box(es)/image(s) could not be converted:")
            for finding in findings[:10]:
                print("    " + finding.describe())
            if len(findings) > 10:
                print(f"    ... and {len(findings) - 10} more")
    out = Path(args.out)
    print("\nconfig for the converted data:\ndata:")
    print(f"  format: {args.dst}\n  root: {out}")
    for key, name in zip(("train", "val"), written):
        value = written[name]
        rel = value.relative_to(out) if value.is_relative_to(out) else value
        print(f"  {key}: {Path(rel).stem if args.dst == 'voc' else rel}")
    print(f"  classes: [{', '.join(classes or [])}]")
    if args.image_mode == "none":
        print("  on_outside_root: allow  # file_name points at the original images, outside this folder")
    if args.image_mode == "symlink":
        print("  on_outside_root: allow  # the images are links to the originals, outside this folder")
    return 0
