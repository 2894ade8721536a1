"""Image file access: strict full decodes through OpenCV, sizes and EXIF orientation from the header.

Every decode in training, validation, evaluation and export goes through :func:`read_image`, which is
strict where OpenCV alone is lenient: a JPEG cut short (OpenCV fills the missing part with grey and
only prints a warning), a file OpenCV cannot decode, a file over the size limit or an image over the
decoder's pixel limit raises :class:`UnreadableImageError` naming the file; a missing file raises
:class:`MissingImageError`.

EXIF orientation: a tag other than 1 says the stored pixels must be rotated or mirrored to be shown
upright. Whether the annotations are in the stored (raw) frame or in the shown (rotated) frame depends
on the tool that made them, so the caller says which: ``apply_orientation=True`` rotates the pixels as
the tag says (as OpenCV's ``imread`` and photo viewers do), ``False`` keeps the stored pixels. The
dataset doctor reports every tagged image and the ``data.on_exif_orientation`` policy chooses.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detect_ft import limits
from detect_ft.errors import DataError
from detect_ft.image_header import check_pixels, jpeg_is_complete, pixel_limit_error
from detect_ft.sources import IMAGE_SUFFIXES  # noqa: F401  (re-exported: one list, on the torch- and PIL-free side)

EXIF_ORIENTATION_TAG = 0x0112


class MissingImageError(DataError):
    """The image file does not exist."""


class UnreadableImageError(DataError):
    """The image file exists but cannot be decoded (corrupt, truncated, not an image, too large)."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: the stored pixel size and the EXIF orientation (1 = as stored)."""

    width: int
    height: int
    orientation: int = 1

    @property
    def rotated(self) -> bool:
        """True when the orientation tag asks for a rotation or mirroring (2..8)."""
        return self.orientation in range(2, 9)

    def size(self, apply_orientation: bool = True) -> tuple[int, int]:
        """(width, height) of the decoded image: sides swapped for tags 5..8 when the tag is applied."""
        if apply_orientation and self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def _missing(path) -> MissingImageError:
    return MissingImageError(f"image file {path} does not exist; fix the path in the annotations or add the file")


def _check_file(path: str | os.PathLike) -> int:
    if not os.path.isfile(path):
        raise _missing(path)
    size = os.path.getsize(path)
    if size > limits.MAX_IMAGE_BYTES:
        raise UnreadableImageError(
            f"image file {path} is {size / 2**20:.0f} MiB, over detect-ft's limit of "
            f"{limits.MAX_IMAGE_BYTES / 2**20:.0f} MiB per image; downscale or re-encode it"
        )
    return size


def _header(source, path) -> ImageInfo:
    """Parse the header of ``source`` (a path or a file object) with Pillow, without decoding pixels."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            orientation = _orientation(image)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow says "Image size (N pixels) exceeds ..."
        pixels = int(found.group(1)) if found else None
        raise pixel_limit_error(f"image file {path}", pixels, error=UnreadableImageError) from None
    except FileNotFoundError:
        raise _missing(path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImageError(f"image file {path} is not a readable image ({exc}); re-save or remove it") from None
    check_pixels(f"image file {path}", width, height, UnreadableImageError)
    return ImageInfo(int(width), int(height), orientation)


def _orientation(image: Image.Image) -> int:
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow's PNG getexif() would decode the whole image to look for a late eXIf chunk
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block: the image itself is still fine
        return 1
    return value if value in range(1, 9) else 1


def read_image_info(path: str | os.PathLike) -> ImageInfo:
    """Stored size and EXIF orientation from the file header (no pixel decoding; fast).

    Raises:
        MissingImageError, UnreadableImageError (not an image, over the size or pixel limit).
    """
    _check_file(path)
    return _header(path, path)


def read_image_size(path: str | os.PathLike, apply_orientation: bool = True) -> tuple[int, int]:
    """(width, height) of the image :func:`read_image` will return, read from the header only."""
    return read_image_info(path).size(apply_orientation)


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/mirror an (H, W, C) array as EXIF orientation ``orientation`` says (1: unchanged)."""
    if orientation == 2:
        out = image[:, ::-1]
    elif orientation == 3:
        out = image[::-1, ::-1]
    elif orientation == 4:
        out = image[::-1]
    elif orientation == 5:
        out = image.transpose(1, 0, 2)
    elif orientation == 6:
        out = image.transpose(1, 0, 2)[:, ::-1]
    elif orientation == 7:
        out = image.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        out = image.transpose(1, 0, 2)[::-1]
    else:
        return image
    return np.ascontiguousarray(out)


def read_image(path: str | os.PathLike, apply_orientation: bool = True) -> np.ndarray:
    """Decode an image file to an RGB uint8 array of shape (H, W, 3), strictly.

    Grey and alpha images are converted to three channels, so every model sees the same layout. With
    ``apply_orientation`` the EXIF orientation tag is applied (OpenCV's ``imread`` behaviour), else the
    stored pixels are returned.

    Raises:
        MissingImageError: no such file.
        UnreadableImageError: not decodable, truncated, over the size or the pixel limit.
    """
    _check_file(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UnreadableImageError(
            f"image file {path} cannot be read ({exc.strerror}); check its permissions"
        ) from None
    info = _header(io.BytesIO(data), path)
    if data[:2] == b"\xff\xd8" and not jpeg_is_complete(data):
        raise UnreadableImageError(
            f"image file {path} is truncated (its JPEG data ends before the end marker); "
            "re-save it from the original or remove it"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise UnreadableImageError(
            f"image file {path} cannot be decoded (corrupt or truncated); re-save it as JPEG or PNG, or remove it"
        )
    if image.shape[1] != info.width or image.shape[0] != info.height:
        raise UnreadableImageError(
            f"image file {path} decodes to {image.shape[1]}x{image.shape[0]} but its header "
            f"says {info.width}x{info.height}; re-save it"
        )
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return apply_exif_orientation(image, info.orientation) if apply_orientation else image
