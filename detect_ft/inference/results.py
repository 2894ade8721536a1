"""``Result``: one image's detections with the class names, what ``Detector.predict`` returns.

Torch-free (numpy and OpenCV), so results from the edge runtime and from a PyTorch checkpoint are the
same objects. :func:`write_results_dataset` writes a list of results as a COCO, VOC or YOLO dataset that
detect-ft's adapters read back (pseudo-labels to review in an annotation tool and train on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

import numpy as np

from detect_ft.utils.errors import DetectFTError

SAVE_FORMATS = ("coco", "voc", "yolo")


@dataclass
class Result:
    """Detections in one image (or video frame).

    Attributes:
        boxes: float32 (N, 4) xyxy in the image's pixels; ``scores`` float32 (N,), descending;
            ``labels`` int64 (N,) in 1..K (label k is ``class_names[k - 1]``).
        class_names: the model's K class names; ``category_ids`` their original dataset ids.
        path: the image file (None for an in-memory image); ``frame`` the 0-based frame of a video.
        height, width: the image size in pixels.
        conf: the score threshold(s) applied: one number, or one per class (in class order).
        image: the RGB uint8 image (H, W, 3) when it was given in memory; files are re-read by :meth:`plot`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    category_ids: list[int]
    height: int
    width: int
    path: Optional[str] = None
    frame: Optional[int] = None
    conf: float | list[float] = 0.0
    image: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def names(self) -> list[str]:
        """The class name of each box (N,)."""
        return [self.class_names[int(k) - 1] for k in self.labels]

    def detections(self) -> dict[str, np.ndarray]:
        """``{"boxes", "scores", "labels"}``: the per-image dict the evaluators and writers take."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}

    def original_image(self) -> np.ndarray:
        """The RGB uint8 image (H, W, 3): the one given, or the file re-read."""
        if self.image is not None:
            return self.image
        if self.path is None or self.frame is not None:
            raise DetectFTError("this result keeps no image (a video frame); draw on the frame with plot(image)")
        from detect_ft.data.image import read_image

        return read_image(self.path)

    def plot(self, image: Optional[np.ndarray] = None) -> np.ndarray:
        """A copy of the image (RGB uint8, H x W x 3) with each box drawn and labelled ``name score``."""
        from detect_ft.inference.drawing import draw_detections

        return draw_detections(self.original_image() if image is None else image, self.detections(), self.class_names)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`plot` to ``path`` (the suffix picks the format, e.g. .jpg or .png), atomically.

        Refuses to write over the image the result came from.
        """
        from detect_ft.inference.drawing import write_rgb_image

        target = Path(path)
        if self.path is not None and target.exists() and os.path.samefile(target, self.path):
            raise DetectFTError(f"{target} is the input image of this result; save the annotated copy elsewhere")
        return write_rgb_image(target, self.plot())

    def to_coco(self, image_id: int = 1) -> list[dict[str, Any]]:
        """COCO results rows (:func:`detect_ft.inference.predictions.coco_results`): ``image_id``, ``file_name`` when
        the result has a file, ``category_id`` (original ids), ``bbox`` [x, y, w, h] pixels, ``score``."""
        from detect_ft.inference.predictions import coco_results

        file_name = None if self.path is None else Path(self.path).name
        return coco_results(image_id, self.detections(), self.category_ids, file_name=file_name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: path, frame, size, the threshold and one entry per box."""
        return {
            "path": self.path,
            "frame": self.frame,
            "height": self.height,
            "width": self.width,
            "conf": self.conf,
            "detections": [
                {"box": box, "score": score, "label": label, "name": self.class_names[label - 1]}
                for box, score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist())
            ],
        }

    def __repr__(self) -> str:
        where = self.path or "in-memory image"
        counts: dict[str, int] = {}
        for name in self.names:
            counts[name] = counts.get(name, 0) + 1
        found = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no detections"
        return f"Result({where}, {self.width}x{self.height}: {found})"


def results_as_records(results: Sequence[Result]):
    """The results as a :class:`~detect_ft.data.records.DatasetRecords` (predicted boxes as annotations).

    Every result needs an image file (``path``) and unique file names, since the written dataset places
    each image under its name.
    """
    from detect_ft.data.records import DatasetRecords, ImageRecord

    if not results:
        raise DetectFTError("no results to write as a dataset; predict at least one image")
    first = results[0]
    records, names = [], {}
    for image_id, result in enumerate(results, start=1):
        if result.path is None or result.frame is not None:
            raise DetectFTError(
                "only predictions on image files can be written as a dataset (this one is a video "
                "frame or an in-memory image); save the images to files and predict those"
            )
        name = Path(result.path).name
        if name in names:
            raise DetectFTError(
                f"{result.path} and {names[name]} share the file name {name}; a dataset needs unique "
                "image names: predict them in separate runs"
            )
        names[name] = result.path
        records.append(
            ImageRecord(
                image_path=os.path.abspath(result.path),
                width=result.width,
                height=result.height,
                boxes=result.boxes,
                labels=result.labels,
                image_id=image_id,
                file_name=name,
            )
        )
    return DatasetRecords(records, list(first.class_names), list(first.category_ids), source="predictions")


def dataset_targets(
    format: str, out_dir: str | os.PathLike, name: str, images: Sequence[str | os.PathLike]
) -> list[tuple[Path, Optional[Path]]]:
    """``(target, source)`` for every file :func:`write_results_dataset` writes for the image files
    ``images`` (unique base names): the annotation files and split list (source None) and each image's
    copy (source: the image). Layouts as ``detect-ft convert`` writes them."""
    out = Path(out_dir)
    paths = [Path(image) for image in images]
    if format == "coco":
        return [(out / f"{name}.json", None)] + [(out / "images" / p.name, p) for p in paths]
    if format == "voc":
        annotations = [(out / "ImageSets" / "Main" / f"{name}.txt", None)]
        annotations += [(out / "Annotations" / f"{p.stem}.xml", None) for p in paths]
        return annotations + [(out / "JPEGImages" / p.name, p) for p in paths]
    if format == "yolo":
        labels = [(out / name / "labels" / f"{p.stem}.txt", None) for p in paths]
        return [(out / "data.yaml", None)] + labels + [(out / name / "images" / p.name, p) for p in paths]
    raise DetectFTError(f"unknown dataset format '{format}'; use one of {', '.join(SAVE_FORMATS)}")


def existing_targets(targets: Sequence[tuple[Path, Optional[Path]]], replace: Collection[Path] = ()) -> list[Path]:
    """The ``targets`` (:func:`dataset_targets`) that exist already and may not be replaced: not listed in
    ``replace`` and not the very image they would be a copy of (which is then left as it is)."""
    allowed = {os.path.abspath(p) for p in replace}
    found = []
    for target, source in targets:
        if not (target.exists() or target.is_symlink()) or os.path.abspath(target) in allowed:
            continue
        if source is not None and target.exists() and os.path.samefile(target, source):
            continue
        found.append(target)
    return found


def write_results_dataset(
    results: Sequence[Result],
    out_dir: str | os.PathLike,
    format: str,
    *,
    name: str = "predictions",
    replace: Collection[str | os.PathLike] = (),
) -> Path:
    """Write ``results`` as a ``format`` (coco, voc or yolo) dataset under ``out_dir``, images copied in.

    Layouts are those of ``detect-ft convert``: coco -> ``out_dir/<name>.json`` + ``images/``; voc ->
    ``out_dir/Annotations``, ``JPEGImages``, ``ImageSets/Main/<name>.txt``; yolo -> ``out_dir/<name>/``
    and ``out_dir/data.yaml``. Returns what to set ``data.train`` (or ``data.val``) to, with
    ``data.root`` = ``out_dir``.

    Nothing that exists is replaced: when any file it would write is already there (a hand-labelled
    dataset's annotations, a ``data.yaml``, an image of that name), it refuses before writing anything,
    naming the file. ``replace`` lists existing files that may be replaced (those an earlier call of
    yours wrote). The source images are never written over.
    """
    from detect_ft.data.convert import write_split

    if format not in SAVE_FORMATS:
        raise DetectFTError(f"unknown dataset format '{format}'; use one of {', '.join(SAVE_FORMATS)}")
    records = results_as_records(results)
    images = [r.image_path for r in records.records]
    taken = existing_targets(dataset_targets(format, out_dir, name, images), [Path(p) for p in replace])
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise DetectFTError(
            f"writing the predictions as a {format} dataset in {out_dir} would replace {taken[0]}{more}, "
            "which already exists; detect-ft never replaces existing annotations or images: write the "
            "dataset to a new folder (or under another name=)"
        )
    protect = tuple(Path(p) for p in images)
    return write_split(records, format, out_dir, name, "copy", protect)
