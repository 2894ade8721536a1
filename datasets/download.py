#!/usr/bin/env python3
"""Download public detection datasets into data/ (needs internet; nothing in the tests calls this).

    python datasets/download.py voc2007      # data/VOCdevkit/VOC2007 (trainval + test), configs/voc2007.yaml
    python datasets/download.py voc2012      # data/VOCdevkit/VOC2012 (trainval), configs/voc2012.yaml
    python datasets/download.py coco2017     # data/coco (train2017, val2017, annotations), configs/coco2017.yaml
    python datasets/download.py pennfudan    # data/PennFudanPed + train.json/val.json, configs/pennfudan.yaml

Archives are fetched with urllib into ``<out>/downloads/`` (kept, so a second run only extracts), then
extracted. COCO's JSONs are rewritten as ``train2017.json``/``val2017.json`` whose ``file_name`` entries
start with the image folder, so one ``data.root`` serves both splits; Penn-Fudan's instance masks
become COCO boxes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOC = "http://host.robots.ox.ac.uk/pascal/VOC"
DATASETS = {
    "voc2007": [f"{VOC}/voc2007/VOCtrainval_06-Nov-2007.tar", f"{VOC}/voc2007/VOCtest_06-Nov-2007.tar"],
    "voc2012": [f"{VOC}/voc2012/VOCtrainval_11-May-2012.tar"],
    "coco2017": [
        "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
        "http://images.cocodataset.org/zips/val2017.zip",
        "http://images.cocodataset.org/zips/train2017.zip",
    ],
    "pennfudan": ["https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"],
}


class DownloadError(Exception):
    pass


def fetch(url: str, folder: Path) -> Path:
    """Download ``url`` into ``folder`` (skipped when the file is there already); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / url.rsplit("/", 1)[-1]
    if target.is_file():
        print(f"have {target}")
        return target
    partial = target.with_name(target.name + ".part")
    print(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if total:
                    print(f"\r  {done / 2**20:8.1f} / {total / 2**20:.1f} MiB", end="", flush=True)
        print()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}). This script needs internet access; on an offline machine "
            f"download the file elsewhere and put it at {target}, then run this script again"
        ) from None
    partial.replace(target)
    return target


def extract(archive: Path, folder: Path) -> None:
    print(f"extracting {archive.name} into {folder}")
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder)
    else:
        with tarfile.open(archive) as t:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and backports): refuse unsafe members
                t.extractall(folder, filter="data")
            else:
                t.extractall(folder)


def prepare_coco(out: Path) -> None:
    """Rewrite the instance JSONs so file_name includes the image folder (``train2017/...``)."""
    from detect_ft.data.formats.coco import write_coco
    from detect_ft.data.load import load_split

    root = out / "coco"
    for split in ("train2017", "val2017"):
        records, _ = load_split(format="coco", root=root, split=f"annotations/instances_{split}.json", images=split)
        write_coco(records, root / f"{split}.json")
        print(f"wrote {root / f'{split}.json'}: {len(records)} images, {records.num_boxes} boxes")


def prepare_pennfudan(out: Path, num_val: int = 50) -> None:
    """Boxes from the instance masks (each non-zero mask value is one pedestrian); the last ``num_val``
    images (sorted by name) are the validation split, as in the torchvision tutorial."""
    import numpy as np
    from PIL import Image

    from detect_ft.data.formats.coco import write_coco
    from detect_ft.data.records import DatasetRecords, ImageRecord

    root = out / "PennFudanPed"
    images = sorted((root / "PNGImages").glob("*.png"))
    records = []
    for index, image_path in enumerate(images):
        mask = np.array(Image.open(root / "PedMasks" / f"{image_path.stem}_mask.png"))
        boxes = []
        for instance in np.unique(mask)[1:]:
            ys, xs = np.nonzero(mask == instance)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        height, width = mask.shape[:2]
        records.append(
            ImageRecord(
                str(image_path),
                width,
                height,
                np.array(boxes, np.float32).reshape(-1, 4),
                np.ones(len(boxes), np.int64),
                image_id=index + 1,
            )
        )
    for name, part in (("train", records[:-num_val]), ("val", records[-num_val:])):
        write_coco(DatasetRecords(part, ["person"], [1]), root / f"{name}.json")
        print(f"wrote {root / f'{name}.json'}: {len(part)} images, {sum(r.num_boxes for r in part)} boxes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download a public detection dataset into data/.")
    parser.add_argument("name", choices=sorted(DATASETS))
    parser.add_argument("--out", default=str(REPO / "data"), help="output folder (default: data/)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        archives = [fetch(url, out / "downloads") for url in DATASETS[args.name]]
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = out / "coco" if args.name == "coco2017" else out
    for archive in archives:
        extract(archive, target)
    if args.name == "coco2017":
        prepare_coco(out)
    elif args.name == "pennfudan":
        prepare_pennfudan(out)
    print(f"done; see configs/{args.name}.yaml (free {shutil.disk_usage(out).free / 2**30:.0f} GiB left)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
