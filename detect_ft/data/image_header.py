"""Image sizes from file headers, without decoding and without Pillow, and the pixel limit that uses them.

The edge runtime may run where only numpy, OpenCV and onnxruntime are installed, yet it must refuse an
image over :data:`detect_ft.utils.limits.MAX_IMAGE_PIXELS` before OpenCV allocates it (a 1 MB PNG can claim
20000 x 20000 pixels: 1.2 GB decoded). :func:`header_size` reads the stored width and height of the
formats OpenCV decodes from a few header bytes: PNG, JPEG, BMP, GIF, WebP and TIFF. Pure Python; the
limit is read from :mod:`detect_ft.utils.limits` at each call, so a program can raise it.
"""

from __future__ import annotations

import os
import struct
from typing import Optional

from detect_ft.utils import limits
from detect_ft.utils.errors import DetectFTError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# JPEG start-of-frame markers (they carry the size): C0..CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) as the header of the encoded image ``data`` states them, before any EXIF rotation;
    None when the format is not one of PNG, JPEG, BMP, GIF, WebP and TIFF or the header is cut short."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:2] == b"BM":
            return _bmp_size(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_size(data)
    except (struct.error, IndexError):
        return None
    return None


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            pos += 2
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def _bmp_size(data: bytes) -> tuple[int, int]:
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means rows stored top-down


def _webp_size(data: bytes) -> Optional[tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> Optional[tuple[int, int]]:
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset : offset + 2])[0]
    sides: dict[int, int] = {}
    for i in range(count):
        tag, kind = struct.unpack(order + "HH", data[offset + 2 + 12 * i : offset + 6 + 12 * i])
        value = data[offset + 10 + 12 * i : offset + 14 + 12 * i]
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            sides[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4])[0]
    return (sides[256], sides[257]) if len(sides) == 2 else None


def jpeg_is_complete(data: bytes) -> bool:
    """False when JPEG data stops before its end-of-image marker.

    The entropy-coded data after the last start-of-scan marker (FFDA) cannot contain FFD9 (a 0xFF byte
    there is always followed by 0x00 or a restart marker), so a complete file has FFD9 after it; bytes
    some cameras append after FFD9 do not matter.
    """
    sos = data.rfind(b"\xff\xda")
    return sos >= 0 and data.find(b"\xff\xd9", sos + 2) >= 0


def pixel_limit_error(
    what: str, pixels: Optional[int], dims: str = "", error: type[DetectFTError] = DetectFTError
) -> DetectFTError:
    """The one-line ``error`` for ``what`` (e.g. ``image file a.png``) holding more pixels than the limit."""
    limit = limits.MAX_IMAGE_PIXELS
    size = f"{dims}{pixels / 1e6:.1f} megapixels" if pixels else "too many pixels"
    return error(
        f"{what} has {size}, beyond the decoder's limit of {limit / 1e6:.1f} megapixels ({limit} pixels); "
        "downscale it or remove it"
    )


def check_pixels(what: str, width: int, height: int, error: type[DetectFTError] = DetectFTError) -> None:
    """``error`` (:func:`pixel_limit_error`) when ``width`` x ``height`` exceeds ``limits.MAX_IMAGE_PIXELS``."""
    if int(width) * int(height) > limits.MAX_IMAGE_PIXELS:
        raise pixel_limit_error(what, int(width) * int(height), f"{int(width)}x{int(height)} = ", error)


def read_checked_bytes(path: str | os.PathLike, error: type[DetectFTError] = DetectFTError) -> bytes:
    """The bytes of the image file ``path`` once its size and its header's pixel count are within the
    limits and, for a JPEG, its data reaches the end marker; ``error`` naming the file otherwise (also
    for a format whose header this module cannot read)."""
    if not os.path.isfile(path):
        raise error(f"image file {path} does not exist; pass a JPEG or PNG file")
    limits.check_size(path, limits.MAX_IMAGE_BYTES, "image file", error)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise error(f"image file {path} cannot be read ({exc.strerror}); check its permissions") from None
    size = header_size(data)
    if size is None:
        raise error(
            f"image file {path}: its size cannot be read from its header (not a PNG, JPEG, BMP, GIF, WebP or "
            "TIFF file, or cut short); re-save it as JPEG or PNG, or install Pillow"
        )
    check_pixels(f"image file {path}", *size, error=error)
    if data[:2] == b"\xff\xd8" and not jpeg_is_complete(data):
        raise error(
            f"image file {path} is truncated (its JPEG data ends before the end marker); "
            "re-save it from the original or remove it"
        )
    return data
