"""Small helpers the adapters share: path resolution, image sizes that become findings, class lists."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from detect_ft.data.checks.findings import MISSING_IMAGE, OUTSIDE_ROOT, UNREADABLE_IMAGE, Finding
from detect_ft.data.image import MissingImageError, read_image_size
from detect_ft.data.records import BACKGROUND_NAMES, is_background_name  # noqa: F401 (re-exported)
from detect_ft.utils.errors import DataError


def resolve(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` if absolute, else ``root / path`` (``root`` "" means the current directory)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return Path(root or ".").expanduser() / path


def size_or_finding(
    image_path: Path, apply_orientation: bool = True
) -> tuple[Optional[tuple[int, int]], Optional[Finding]]:
    """(width, height) from the image header (in the frame ``apply_orientation`` chooses), or a
    missing_image / unreadable_image finding when it cannot be read."""
    try:
        return read_image_size(image_path, apply_orientation), None
    except DataError as exc:
        kind = MISSING_IMAGE if isinstance(exc, MissingImageError) else UNREADABLE_IMAGE
        return None, Finding(kind, str(image_path), without_path(str(exc), image_path))


def inside_root(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when ``path`` (an image path as the adapter built it: absolute, or relative to the current
    folder like ``root`` itself) stays inside ``root``, both as written and with symbolic links resolved.

    As written (``os.path.abspath`` normalises ``..``): an annotation that names ``/etc/x.jpg`` or
    ``../../x.jpg`` leaves the dataset. Resolved (``os.path.realpath``, which reads links but opens no
    file): an image that is a link to a file elsewhere, or lies in a linked folder pointing elsewhere,
    leaves it too; a link that stays inside (or a ``root`` that is itself a link) does not.
    """
    base, target = Path(root or ".").expanduser(), Path(path).expanduser()
    written = _within(os.path.abspath(base), os.path.abspath(target))
    return written and _within(os.path.realpath(base), os.path.realpath(target))


def _within(base: str, target: str) -> bool:
    """``target`` is ``base`` or below it (both absolute and normalised)."""
    return target == base or target.startswith(base.rstrip(os.sep) + os.sep)


def outside_root_finding(image_path: str | os.PathLike, roots: list, where: str) -> Optional[Finding]:
    """An ``outside_root`` finding when ``image_path`` is inside none of ``roots`` (see :func:`inside_root`).

    ``where`` names the annotation that gave the path (file and entry). The path is checked before the
    file is opened, so a hostile annotation (or a symbolic link planted in the dataset) cannot make
    detect-ft read, or ``convert`` copy, files from elsewhere unless ``data.on_outside_root=allow``.
    """
    if any(inside_root(root, image_path) for root in roots):
        return None
    shown = ", ".join(str(r) for r in roots)
    written = Path(image_path).expanduser()
    if any(_within(os.path.abspath(Path(r or ".").expanduser()), os.path.abspath(written)) for r in roots):
        why = (
            f"the image is a symbolic link (or lies in a linked folder) to {os.path.realpath(written)}, "
            f"which leaves the dataset folder {shown}"
        )
    else:
        why = f"the image path is absolute or leaves the dataset folder {shown}"
    return Finding(OUTSIDE_ROOT, str(image_path), f"{where}: {why}")


@dataclass
class ImagePlacer:
    """Checks the image paths an adapter builds and finds the images' sizes, collecting the findings.

    A path inside none of ``roots`` is an ``outside_root`` finding (see :func:`outside_root_finding`) and
    the image is left out unless ``allow_outside_root``. A size not given by the annotation is read from
    the header in the frame ``apply_orientation`` chooses (:func:`size_or_finding`: a missing or
    unreadable file is a finding and the image is left out).
    """

    roots: list
    allow_outside_root: bool
    apply_orientation: bool
    findings: list[Finding] = field(default_factory=list)

    def size(
        self, image_path: Path, where: str, annotated_size: Optional[tuple[int, int]] = None
    ) -> Optional[tuple[int, int]]:
        """The image's (width, height), or None when it is left out. ``where`` names the annotation that
        gave the path; ``annotated_size`` is the size the annotation gives, if valid."""
        outside = outside_root_finding(image_path, self.roots, where)
        if outside is not None:
            self.findings.append(outside)
            if not self.allow_outside_root:
                return None
        if annotated_size is not None:
            return annotated_size
        size, finding = size_or_finding(image_path, self.apply_orientation)
        if finding is not None:
            self.findings.append(finding)
        return size


def without_path(message: str, path: str | os.PathLike) -> str:
    """``"image file <path> is ..."`` -> ``"is ..."``: a finding names the file already."""
    prefix = f"image file {path} "
    return message[len(prefix) :] if message.startswith(prefix) else message


def select_classes(
    dataset_names: list[str], classes: Optional[list[str]], source: str
) -> tuple[list[str], dict[str, int]]:
    """The class list and a name -> label (1..K) map.

    Without ``classes`` the dataset's names are used as given; with it, the user's list selects and
    orders the classes, and each of its names must exist in the dataset (else DataError).
    """
    check_not_background(classes or [], source)
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


def check_not_background(classes: list[str], source: str) -> None:
    """DataError when a class of the user's list is named like the background (label 0), in every format."""
    reserved = [c for c in classes if is_background_name(c)]
    if reserved:
        raise DataError(
            f"{source}: data.classes names {reserved}, which mean background; label 0 is the background in every "
            "model, so such a class cannot be trained; remove it from data.classes or rename the class"
        )
