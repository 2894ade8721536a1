"""Image file access: full decodes through OpenCV, sizes from the file header only."""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detect_ft.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an RGB uint8 array of shape (H, W, 3).

    Grey and alpha images are converted to three channels, so every model sees the same layout.
    """
    if not os.path.isfile(path):
        raise DataError(f"image file {path} does not exist; fix the path in the annotations or add the file")
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image file {path} cannot be decoded; re-save it as JPEG or PNG, or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image, read from its header without decoding the pixels.

    PIL parses only the header on ``open``, which keeps the check of a whole dataset fast.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist; fix the path in the annotations or add the file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image file {path} is not a readable image ({exc}); re-save or remove it") from None
    if image.format in ("JPEG", "MPO"):
        # cv2.IMREAD_COLOR applies the EXIF orientation, so a rotated JPEG decodes with its sides
        # swapped; report the size the decoder will produce.
        orientation = _exif_orientation(path)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
    return int(width), int(height)


def _exif_orientation(path: str | os.PathLike) -> int:
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(0x0112, 1))
    except Exception:
        return 1
