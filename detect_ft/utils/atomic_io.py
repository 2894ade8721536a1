"""Atomic file writes: a crash, a kill or a full disk mid-write never leaves a half-written file behind.

Every write goes to a temporary file beside the target, which is renamed over the target only once it
is complete; on any failure the temporary file is removed and the previous target, if any, is kept.
Files are created with the permissions the user's umask gives (``0o666 & ~umask``), as ``open`` would.
A write that fails for lack of space or permission raises :class:`DetectFTError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from detect_ft.utils.errors import DetectFTError

# errno values that mean "this write cannot succeed here": the user fixes them, not the code
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # elsewhere: set and restore, the only portable way to read it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, else removed.

    ``os.replace`` is atomic on POSIX and Windows when both paths are on one file system, which a sibling
    temporary file guarantees. The temporary file has the mode a plain ``open(path, "w")`` would give.

    Raises:
        DetectFTError: the file cannot be written (disk full, quota, read-only, no permission); the
            previous ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _is_storage_error(exc):
            raise write_error(path, exc) from None
        raise


def _is_storage_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_ERRNOS
    # torch.save's zip writer reports a short write as a RuntimeError without the errno
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("PytorchStreamWriter", "unexpected pos", "file write failed")
    )


def write_error(path: Path, exc: BaseException) -> DetectFTError:
    """The one-line error for a file that cannot be written: the path, the reason, the fix."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
    return DetectFTError(
        f"cannot write {path} ({reason}): the disk may be full or not writable; free space or choose another "
        f"folder and rerun (the previous {path.name}, if any, is kept as it was)"
    )


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (nan, inf) replaced by None, so that it is valid JSON.

    Python's ``json`` writes bare ``NaN``/``Infinity``, which strict JSON readers reject. Tuples become
    lists and numpy scalars plain numbers, as ``json`` would write them.
    """
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()  # numpy / torch scalars
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (non-finite floats written as null, see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON (non-finite floats as null), atomically."""
    write_text_atomic(path, dumps_json(obj, indent=indent))


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
