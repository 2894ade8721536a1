"""Small helpers the adapters share: path resolution, image sizes that become findings, class lists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from detect_ft.data.findings import MISSING_IMAGE, Finding
from detect_ft.data.image import read_image_size
from detect_ft.data.records import BACKGROUND_NAMES, is_background_name  # noqa: F401 (re-exported)
from detect_ft.errors import DataError



def resolve(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` if absolute, else ``root / path`` (``root`` "" means the current directory)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return Path(root or ".").expanduser() / path


def size_or_finding(image_path: Path) -> tuple[Optional[tuple[int, int]], Optional[Finding]]:
    """(width, height) from the image header, or a missing_image finding when it cannot be read."""
    try:
        return read_image_size(image_path), None
    except DataError as exc:
        return None, Finding(MISSING_IMAGE, str(image_path), without_path(str(exc), image_path))


def without_path(message: str, path: str | os.PathLike) -> str:
    """``"image file <path> is ..."`` -> ``"is ..."``: a finding names the file already."""
    prefix = f"image file {path} "
    return message[len(prefix):] if message.startswith(prefix) else message


def select_classes(
    dataset_names: list[str], classes: Optional[list[str]], source: str
) -> tuple[list[str], dict[str, int]]:
    """The class list and a name -> label (1..K) map.

    Without ``classes`` the dataset's names are used as given; with it, the user's list selects and
    orders the classes, and each of its names must exist in the dataset (else DataError).
    """
    if not classes:
        names = list(dataset_names)
    else:
        missing = [c for c in classes if c not in dataset_names]
        if missing:
            raise DataError(
                f"{source}: data.classes names {missing} are not classes of this dataset "
                f"(it has {sorted(dataset_names)}); fix data.classes"
            )
        names = list(classes)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{source}: class names {duplicates} appear more than once; make them unique")
    return names, {name: i + 1 for i, name in enumerate(names)}
