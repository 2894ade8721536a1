"""Image file access: strict full decodes through OpenCV, sizes and EXIF orientation from the header.

Every decode in training, validation, evaluation and export goes through :func:`read_image`, which is
strict where OpenCV alone is lenient: a JPEG cut short (OpenCV fills the missing part with grey and
only prints a warning), a PNG without its IEND chunk, a file OpenCV cannot decode, a file over the size
limit or an image over the decoder's pixel limit raises :class:`UnreadableImageError` naming the file;
a missing file raises :class:`MissingImageError`. :func:`read_image_info` with ``check_end`` finds the
same cut-short files without decoding: it reads the header and the file's last bytes only.

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

try:  # Pillow reads headers and EXIF; a minimal edge install without it still decodes (read_image)
    from PIL import Image, UnidentifiedImageError
except ImportError:  # pragma: no cover - exercised by tests/test_edge.py in a subprocess without PIL
    Image = None

from detect_ft.data.image_header import (  # noqa: F401  (IMAGE_SUFFIXES re-exported: one list, PIL-free)
    IMAGE_SUFFIXES,
    check_pixels,
    jpeg_is_complete,
    pixel_limit_error,
    read_checked_bytes,
)
from detect_ft.utils import limits
from detect_ft.utils.errors import DataError

EXIF_ORIENTATION_TAG = 0x0112
JPEG_START = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# How much of a file's end is read to find the JPEG end marker or the PNG IEND chunk without reading
# the file: more than any entropy-coded tail needs; a longer trailer after the marker (some cameras
# append one) costs one read of the whole file.
TAIL_BYTES = 64 * 1024


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


def _orientation(image: "Image.Image") -> int:
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow's PNG getexif() would decode the whole image to look for a late eXIf chunk
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block: the image itself is still fine
        return 1
    return value if value in range(1, 9) else 1


def read_image_info(path: str | os.PathLike, check_end: bool = False) -> ImageInfo:
    """Stored size and EXIF orientation from the file header (no pixel decoding; fast).

    With ``check_end`` the file's last bytes are read too, and a JPEG without its end marker or a PNG
    without its IEND chunk (a file cut short: a partial download or copy) raises, as :func:`read_image`
    would; the whole file is read only when the marker is not among the last :data:`TAIL_BYTES`.

    Raises:
        MissingImageError, UnreadableImageError (not an image, cut short, over the size or pixel limit).
    """
    size = _check_file(path)
    if not check_end:
        return _header(path, path)
    try:
        with open(path, "rb") as f:
            info = _header(f, path)  # Pillow leaves a file object it was given open
            f.seek(0)
            head = f.read(len(PNG_SIGNATURE))
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
            whole = size <= TAIL_BYTES
            if not whole and _missing_end(head, tail, whole=False):
                f.seek(0)  # the marker may lie further back: decide on the whole file
                tail, whole = f.read(), True
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    problem = _missing_end(head, tail, whole)
    if problem:
        raise _truncated(path, problem)
    return info


def read_image_size(path: str | os.PathLike, apply_orientation: bool = True) -> tuple[int, int]:
    """(width, height) of the image :func:`read_image` will return, read from the header only."""
    return read_image_info(path).size(apply_orientation)


def _missing_end(head: bytes, data: bytes, whole: bool) -> str:
    """What the file lacks at its end ('' when complete, or not a JPEG/PNG): ``head`` is its first bytes,
    ``data`` all of it (``whole``) or its last bytes.

    JPEG: see :func:`jpeg_is_complete`. When ``data`` is the tail, the last start-of-scan marker may lie
    before it; then the tail is all entropy-coded data, which cannot hold FFD9 either, so any FFD9 in it
    ends the image (an EXIF thumbnail's FFD9 sits before the first scan, never after the last one).
    """
    if head.startswith(JPEG_START):
        if whole:
            complete = jpeg_is_complete(data)
        else:
            sos = data.rfind(b"\xff\xda")
            complete = data.find(b"\xff\xd9", sos + 2 if sos >= 0 else 0) >= 0
        return "" if complete else "its JPEG data ends before the end marker"
    if head.startswith(PNG_SIGNATURE) and b"IEND" not in data:
        return "its PNG data ends before the IEND chunk"
    return ""


def _truncated(path, problem: str) -> UnreadableImageError:
    return UnreadableImageError(
        f"image file {path} is truncated ({problem}); re-save it from the original or remove it"
    )


def _cannot_read(path, exc: OSError) -> UnreadableImageError:
    return UnreadableImageError(f"image file {path} cannot be read ({exc.strerror}); check its permissions")


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

    Without Pillow (a minimal edge install) the header is read by :mod:`.image_header` and OpenCV applies
    the EXIF orientation itself.
    """
    if Image is None:
        return _read_without_pillow(path)
    _check_file(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    info = _header(io.BytesIO(data), path)
    problem = _missing_end(data, data, whole=True)
    if problem:
        raise _truncated(path, problem)
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


def _read_without_pillow(path: str | os.PathLike) -> np.ndarray:
    data = read_checked_bytes(path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies the EXIF orientation
    if image is None:
        raise UnreadableImageError(
            f"image file {path} cannot be decoded (corrupt, truncated or not an image); pass a JPEG or PNG file"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
