"""The one annotation record format. Every adapter emits it; everything else reads only it.

Label convention, everywhere in detect-ft: the user's classes are ``1..K`` in the order of
``DatasetRecords.class_names`` (label ``k`` is ``class_names[k - 1]``); ``0`` is background and never
appears as a box label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Names that mean "background" in other tools; a class by such a name would collide with label 0, so
# every format and the config refuse it as a class name.
BACKGROUND_NAMES = frozenset({"background", "__background__", "__background", "bg"})


def is_background_name(name: str) -> bool:
    """True for a class name that means background (case and surrounding spaces ignored)."""
    return str(name).strip().lower() in BACKGROUND_NAMES


@dataclass
class ImageRecord:
    """One image and its boxes.

    Attributes:
        image_path: absolute path of the image file.
        width, height: image size in pixels as annotated (the doctor checks it against the file).
        boxes: float32 array (N, 4), xyxy, absolute pixels, continuous coordinates (0..width, 0..height).
        labels: int64 array (N,), values in 1..K.
        iscrowd: bool array (N,); crowd boxes are never training targets, only evaluation ignore regions.
        difficult: bool array (N,); VOC ``difficult`` flag, ignored by VOC-style evaluation.
        image_id: integer id, unique within a split (the COCO image id for COCO datasets).
        file_name: the image's path as written in the annotations (relative), for writing converters.
        apply_orientation: decode with the file's EXIF orientation applied (the boxes are in the
            rotated frame), or keep the stored pixels (False); matters only for tagged images.
    """

    image_path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    image_id: int = 0
    file_name: str = ""
    apply_orientation: bool = True

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.iscrowd = _flags(self.iscrowd, n)
        self.difficult = _flags(self.difficult, n)
        if not self.file_name:
            self.file_name = Path(self.image_path).name

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    def select(self, keep: np.ndarray) -> "ImageRecord":
        """A copy holding only the boxes where the boolean mask (or index array) ``keep`` selects."""
        return ImageRecord(
            image_path=self.image_path,
            width=self.width,
            height=self.height,
            boxes=self.boxes[keep],
            labels=self.labels[keep],
            iscrowd=self.iscrowd[keep],
            difficult=self.difficult[keep],
            image_id=self.image_id,
            file_name=self.file_name,
            apply_orientation=self.apply_orientation,
        )


def _flags(values: np.ndarray | list | None, n: int) -> np.ndarray:
    if values is None or (hasattr(values, "__len__") and len(values) == 0 and n):
        return np.zeros((n,), bool)
    return np.asarray(values, dtype=bool).reshape(n)


@dataclass
class DatasetRecords:
    """A split: its image records and the class names.

    Attributes:
        records: one ImageRecord per image (background images have no boxes).
        class_names: K names; label k is ``class_names[k - 1]``.
        category_ids: K original dataset category ids (COCO ids, or 1..K for VOC/YOLO), so predictions
            can be written back with the ids the user's tools expect.
        source: where the split came from (annotation file or folder), for messages.
    """

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.class_names) + 1))
        if len(self.category_ids) != len(self.class_names):
            raise ValueError("category_ids and class_names must have the same length")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_boxes(self) -> int:
        return sum(r.num_boxes for r in self.records)
