"""Box-aware training augmentation built on albumentations.

    transform = build_transform("light", train=True)
    image, boxes, labels = transform(image, boxes, labels)

``image`` is an (H, W, 3) uint8 RGB array, ``boxes`` an (N, 4) float32 array in xyxy absolute pixels and
``labels`` an (N,) int64 array; the same triple comes back. Boxes leaving the image are clipped; boxes
shrunk below ``min_area`` pixels^2 or keeping less than ``min_visibility`` of their area are dropped with
their labels, so an image can come back as a background image with (0, 4) boxes.

Presets (``PRESETS``): ``none``, ``light`` (flip, scale/translate, colour jitter), ``ssd`` (the SSD
paper's photometric distortion, zoom-out on a mean-filled canvas, min-IoU random crop, flip) and
``strong`` (a 2x2 mosaic with three other dataset images, then ``light``). A transform that wants other
dataset samples says so in ``num_extra``; :class:`~detect_ft.data.dataset.DetectionDataset` passes a
function fetching them as ``extra``. Eval-time transforms do nothing: torchvision detectors resize and normalise inside the model.

``crop_size`` (``augment.crop_size``) puts :func:`slice_crop` first: a ``crop_size`` x ``crop_size`` window of
the original pixels (padded where the image is smaller), so that training sees objects at the scale that
sliced inference on tiles of that size sees them. With a mosaic, the other images are cropped alike.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, Sequence

# albumentations asks pypi.org for a newer version of itself on import (a 2 s timeout offline, in every
# data-loader process that imports it). A toolkit must not phone home; a user's own setting stands.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.core.transforms_interface import BaseTransformInitSchema

from detect_ft.utils.boxes import box_iou
from detect_ft.utils.errors import ConfigError

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (H,W,3) uint8, boxes (N,4) xyxy, labels (N,)

# ImageNet mean in 0..255 RGB: the colour SSD fills its zoom-out canvas with, so that after the model's
# normalisation the padding is close to zero.
MEAN_RGB = (124.0, 116.0, 104.0)


def bbox_params(min_area: float, min_visibility: float) -> A.BboxParams:
    """The one box contract with albumentations: xyxy absolute pixels, labels carried along, clipped."""
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_area=min_area,
        min_visibility=min_visibility,
        clip=True,
    )


def sanitize_boxes(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy ``boxes`` (N, 4) to the image and drop those left with no area, with their labels.

    albumentations raises on boxes outside the image or with x2 <= x1, so every input is passed through
    this first, and every output too (its float round trip can leave a box a hair outside the image).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    boxes = boxes.copy()
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(boxes).all(axis=1)
    return boxes[keep], labels[keep]


class ZoomOut(A.DualTransform):
    """SSD's "expand": place the image at a random spot of a canvas ``side_range`` times larger.

    Small objects become smaller, which SSD needs to learn them; the canvas is filled with ``fill``.
    """

    class InitSchema(BaseTransformInitSchema):
        side_range: tuple[float, float]
        fill: tuple[float, ...] | float

    def __init__(self, side_range: tuple[float, float] = (1.0, 4.0), fill: Any = MEAN_RGB, p: float = 0.5):
        super().__init__(p=p)
        if not 1.0 <= side_range[0] <= side_range[1]:
            raise ValueError(f"side_range must satisfy 1 <= low <= high, got {side_range}")
        self.side_range = side_range
        self.fill = fill

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(*self.side_range)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        top = int((canvas_h - height) * self.py_random.random())
        left = int((canvas_w - width) * self.py_random.random())
        return {"pad": (top, canvas_h - height - top, left, canvas_w - width - left)}

    def apply(self, img: np.ndarray, pad: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        top, bottom, left, right = pad
        fill = self.fill if isinstance(self.fill, (int, float)) else tuple(self.fill)
        return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=fill)

    def apply_to_bboxes(self, bboxes: np.ndarray, pad: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        # Inside a Compose boxes are normalised xyxy followed by encoded label columns.
        height, width = params["shape"][:2]
        top, bottom, left, right = pad
        out = bboxes.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] * width + left) / (width + left + right)
        out[:, [1, 3]] = (out[:, [1, 3]] * height + top) / (height + top + bottom)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("side_range", "fill")


class MinIoURandomCrop(A.DualTransform):
    """SSD's random crop: a patch whose IoU with some box is at least a randomly chosen minimum.

    As in the SSD paper (and torchvision's ``RandomIoUCrop``): pick a minimum IoU from ``min_ious``
    (1.0 meaning "keep the whole image"), then try up to ``trials`` patches of ``scale`` of each side and
    aspect ratio within ``aspect_range``; a patch qualifies when some box centre lies inside it and one
    of those boxes overlaps it by at least the minimum. Only boxes whose centre lies inside the patch are
    kept. A background image gets an unconstrained random patch.
    """

    class InitSchema(BaseTransformInitSchema):
        min_ious: Sequence[float]
        scale: tuple[float, float]
        aspect_range: tuple[float, float]
        trials: int

    def __init__(
        self,
        min_ious: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0),
        scale: tuple[float, float] = (0.3, 1.0),
        aspect_range: tuple[float, float] = (0.5, 2.0),
        trials: int = 40,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.min_ious = tuple(min_ious)
        self.scale = scale
        self.aspect_range = aspect_range
        self.trials = trials

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        full = (0, 0, width, height)
        bboxes = data.get("bboxes")
        boxes = (
            np.zeros((0, 4), np.float32)
            if bboxes is None
            else np.asarray(bboxes)[:, :4] * np.array([width, height, width, height])
        )
        # torchvision loops until a patch is found; a bound keeps a pathological image from hanging a worker.
        for _ in range(50):
            min_iou = self.py_random.choice(self.min_ious)
            if min_iou >= 1.0:
                return {"crop_coords": full}
            for _ in range(self.trials):
                crop = self._sample_patch(width, height)
                if crop is None:
                    continue
                if not len(boxes):
                    return {"crop_coords": crop}
                inside = _centres_inside(boxes, crop)
                if inside.any() and box_iou(boxes[inside], np.array([crop])).max() >= min_iou:
                    return {"crop_coords": crop}
        return {"crop_coords": full}

    def _sample_patch(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        new_w = int(width * self.py_random.uniform(*self.scale))
        new_h = int(height * self.py_random.uniform(*self.scale))
        if new_w < 1 or new_h < 1 or not self.aspect_range[0] <= new_w / new_h <= self.aspect_range[1]:
            return None
        left = int((width - new_w) * self.py_random.random())
        top = int((height - new_h) * self.py_random.random())
        return (left, top, left + new_w, top + new_h)

    def apply(self, img: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        return fcrops.crop(img, *crop_coords)

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        height, width = params["shape"][:2]
        if not len(bboxes):
            return bboxes
        # Rows carry the encoded labels in extra columns, so dropping a row drops its label too.
        bboxes = bboxes[_centres_inside(bboxes[:, :4] * np.array([width, height, width, height]), crop_coords)]
        return fcrops.crop_bboxes_by_coords(bboxes, crop_coords, (height, width))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_ious", "scale", "aspect_range", "trials")


def _centres_inside(boxes: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return (crop[0] < cx) & (cx < crop[2]) & (crop[1] < cy) & (cy < crop[3])


class SizeKeepingMosaic(A.Mosaic):
    """albumentations' Mosaic with the output (and cell) size set to the primary image's size.

    Keeping each sample's size and orientation keeps aspect-ratio batch grouping, which reads the
    annotated sizes, truthful.
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        self.target_size = (height, width)
        self.cell_shape = (height, width)
        return super().get_params_dependent_on_data(params, data)


# How often a slice crop is placed to hold a whole box (one picked at random); the other crops fall
# anywhere, so background tiles, which sliced inference also sees, are still trained on.
OBJECT_CROP_P = 0.8


def slice_crop(size: int) -> list[A.BasicTransform]:
    """Steps giving a random ``size`` x ``size`` window of the image at its own scale (no resizing).

    A side shorter than ``size`` is first padded with ``MEAN_RGB`` (at a random offset). With
    probability ``OBJECT_CROP_P`` the window contains a whole box chosen at random (or as much of a box
    larger than the window as fits), else it lies anywhere. Boxes the window cuts are clipped, and
    dropped by the pipeline's ``min_area`` / ``min_visibility`` rules.
    """
    return [
        A.PadIfNeeded(
            min_height=size, min_width=size, position="random", border_mode=cv2.BORDER_CONSTANT, fill=MEAN_RGB
        ),
        A.OneOf(
            [A.AtLeastOneBBoxRandomCrop(size, size, p=OBJECT_CROP_P), A.RandomCrop(size, size, p=1 - OBJECT_CROP_P)],
            p=1.0,
        ),
    ]


def _light() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), fill=MEAN_RGB, p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    ]


def _ssd() -> list[A.BasicTransform]:
    # Photometric distortion as in the SSD reference code: jitter, then sometimes a channel swap.
    return [
        A.ColorJitter(brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=0.05, p=0.5),
        A.ChannelShuffle(p=0.1),
        ZoomOut(side_range=(1.0, 4.0), fill=MEAN_RGB, p=0.5),
        MinIoURandomCrop(),
        A.HorizontalFlip(p=0.5),
    ]


def _mosaic() -> A.BasicTransform:
    return SizeKeepingMosaic(grid_yx=(2, 2), center_range=(0.3, 0.7), fill=MEAN_RGB, p=1.0)


# preset name -> builder of its albumentations steps
PRESETS: dict[str, Callable[[], list[A.BasicTransform]]] = {
    "none": list,
    "light": _light,
    "ssd": _ssd,
    "strong": _light,  # after a mosaic, see MIXING
}

# preset name -> (builder of its image-mixing step, probability, number of other samples it needs)
MIXING: dict[str, tuple[Callable[[], A.BasicTransform], float, int]] = {
    "strong": (_mosaic, 0.5, 3),
}


class BoxTransform:
    """Callable ``(image, boxes, labels, extra=None) -> (image, boxes, labels)`` around A.Compose.

    An optional ``crop`` (:func:`slice_crop`) runs first of all. An optional ``mixer`` (mosaic) runs
    next, with probability ``mix_p``, on the sample and ``num_extra`` other samples given by ``extra``:
    a list of (image, boxes, labels), or a function returning one; each of them is cropped first too. A
    function is only called when the mixer runs: decoding three more images for a mosaic that is then
    skipped made ``strong`` three times slower than ``light``.
    """

    def __init__(
        self,
        steps: list[A.BasicTransform],
        min_area: float,
        min_visibility: float,
        mixer: A.BasicTransform | None = None,
        mix_p: float = 0.0,
        num_extra: int = 0,
        crop: list[A.BasicTransform] | None = None,
    ):
        params = bbox_params(min_area, min_visibility)
        self.compose = A.Compose(steps, bbox_params=params) if steps else None
        self.mixer = A.Compose([mixer], bbox_params=bbox_params(min_area, min_visibility)) if mixer else None
        self.crop = A.Compose(crop, bbox_params=bbox_params(min_area, min_visibility)) if crop else None
        self.mix_p = mix_p
        self.num_extra = num_extra if mixer else 0
        self._rng = random.Random()

    def set_seed(self, seed: int) -> None:
        """Seed the augmentation's own generators (albumentations ignores numpy's and Python's global ones)."""
        self._rng = random.Random(seed)
        if self.compose is not None:
            self.compose.set_random_seed(seed)
        if self.mixer is not None:
            self.mixer.set_random_seed(seed + 1)
        if self.crop is not None:
            self.crop.set_random_seed(seed + 2)

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        extra: list[Sample] | Callable[[], list[Sample]] | None = None,
    ) -> Sample:
        boxes, labels = sanitize_boxes(boxes, labels, image.shape[1], image.shape[0])
        if self.crop is not None:
            image, boxes, labels = _run(self.crop, image, boxes, labels)
        if self.mixer is not None and self._rng.random() < self.mix_p:
            samples = extra() if callable(extra) else extra or []
            if self.crop is not None:  # the other images at the same scale as this one
                samples = [_run(self.crop, *sanitized(*sample)) for sample in samples]
            metadata = [_metadata(*sample) for sample in samples]
            image, boxes, labels = _run(self.mixer, image, boxes, labels, mosaic_metadata=metadata)
        if self.compose is not None:
            image, boxes, labels = _run(self.compose, image, boxes, labels)
        return image, boxes, labels

    def __repr__(self) -> str:
        return f"BoxTransform(crop={self.crop!r}, mixer={self.mixer!r}, mix_p={self.mix_p}, compose={self.compose!r})"


def _run(compose: A.Compose, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, **extra: Any) -> Sample:
    out = compose(image=image, bboxes=boxes, labels=labels, **extra)
    image = out["image"]
    boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    return (image, *sanitize_boxes(boxes, labels, image.shape[1], image.shape[0]))


def sanitized(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> Sample:
    """The sample with :func:`sanitize_boxes` applied to its boxes."""
    return (image, *sanitize_boxes(boxes, labels, image.shape[1], image.shape[0]))


def _metadata(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    image, boxes, labels = sanitized(image, boxes, labels)
    return {"image": image, "bboxes": boxes, "labels": labels}


def identity_transform(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, extra: Any = None) -> Sample:
    """The eval-time transform: the model's own transform resizes and normalises."""
    return image, boxes, labels


def build_transform(
    preset: str, *, train: bool, min_area: float = 4.0, min_visibility: float = 0.2, crop_size: int = 0
) -> Callable[..., Sample]:
    """The augmentation for ``preset`` (a key of ``PRESETS``); ``train=False`` gives the identity.

    The result maps (image (H,W,3) uint8 RGB, boxes (N,4) float xyxy absolute, labels (N,) int64) to the
    same triple, with boxes clipped to the output image and too-small ones dropped with their labels.
    ``crop_size`` > 0 first takes a random ``crop_size`` x ``crop_size`` window (:func:`slice_crop`), so
    every training image comes out that size.
    """
    if preset not in PRESETS:
        raise ConfigError(f"config key 'augment.preset': got {preset!r}; allowed: {', '.join(PRESETS)}")
    if not train:
        return identity_transform
    mixer, mix_p, num_extra = MIXING.get(preset, (None, 0.0, 0))
    return BoxTransform(
        PRESETS[preset](),
        min_area=min_area,
        min_visibility=min_visibility,
        mixer=mixer() if mixer else None,
        mix_p=mix_p,
        num_extra=num_extra,
        crop=slice_crop(crop_size) if crop_size else None,
    )
