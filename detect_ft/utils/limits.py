"""Size limits for the files detect-ft reads, so a huge or hostile file fails fast with one line.

Every reader of a user-supplied file checks its size against the limit of its kind before parsing it,
and parses it with a safe parser (YAML ``safe_load``, JSON, XML without DTDs, ``torch.load`` with
``weights_only=True``). The limits are far above what a real dataset or model needs; a file over its
limit gets a :class:`~detect_ft.utils.errors.DetectFTError` (or the subclass the caller passes) that names
the file, its size and the limit. They are module constants so that a program with a real need can
raise them (``detect_ft.utils.limits.MAX_JSON_BYTES = ...``) before loading.
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

from detect_ft.utils.errors import DetectFTError

MIB = 1 << 20
GIB = 1 << 30

MAX_CONFIG_BYTES = 1 * MIB  # a detect-ft YAML config
MAX_NAMES_BYTES = 4 * MIB  # YOLO data.yaml / classes.txt
MAX_JSON_BYTES = 2 * GIB  # a COCO annotation file (COCO's own train2017 file is 448 MiB)
MAX_XML_BYTES = 4 * MIB  # one VOC annotation file (real ones are a few KiB)
MAX_LABEL_BYTES = 16 * MIB  # one YOLO label file
MAX_LIST_BYTES = 256 * MIB  # a split list (VOC ImageSets, YOLO image lists)
MAX_IMAGE_BYTES = 1 * GIB  # one image file
MAX_IMAGE_PIXELS = 178_956_970  # width x height of one image: Pillow's decompression-bomb limit (2 x 89.5 MP)
MAX_CHECKPOINT_BYTES = 16 * GIB  # a .pt checkpoint or weights file
MAX_ONNX_METADATA_BYTES = 16 * MIB  # the detect_ft metadata JSON inside an exported model
# The largest model input side a config or checkpoint may ask for: far above any detector's (SSD 300,
# R-CNN 1333), low enough that a tampered value cannot make inference allocate gigabytes.
MAX_INPUT_SIDE = 8192


def check_size(path: str | os.PathLike, limit: int, what: str, error: type[DetectFTError] = DetectFTError) -> int:
    """The size of ``path`` in bytes; ``error`` when it exceeds ``limit``.

    Args:
        what: what the file is, for the message ("annotation file", "config file", ...).
    """
    size = os.path.getsize(path)
    if size > limit:
        raise error(
            f"{what} {path} is {_human(size)}, over detect-ft's limit of {_human(limit)} for such files; "
            f"check that it is the right file (see docs/safety.md for the limits)"
        )
    return size


def read_text(path: str | os.PathLike, limit: int, what: str, error: type[DetectFTError] = DetectFTError) -> str:
    """The UTF-8 text of a file of at most ``limit`` bytes; ``error`` naming the file otherwise."""
    check_size(path, limit, what, error)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror}); check the path and its permissions") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from None


_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxdict, _short.maxtuple, _short.maxstring, _short.maxother = 2, 4, 4, 4, 60, 60


def short_repr(value: Any) -> str:
    """A bounded ``repr`` for messages: a value read from a hostile file may be huge or deeply shared
    (a YAML alias bomb), and the plain ``repr`` of it would take exponential time and memory."""
    text = _short.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _human(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
