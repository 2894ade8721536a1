"""An Ultralytics dataset file (``data.yaml``: ``path``, ``train``, ``val``, ``names``) read as detect-ft's
``data`` config section, so ``detect-ft train data.yaml`` works on a YOLO dataset as it comes (a Roboflow
export, an Ultralytics dataset).

Paths are resolved as Ultralytics does for a dataset beside its file: ``path`` (the dataset folder;
default the file's folder) relative to the file's folder, else to the current directory; ``train`` and
``val`` relative to ``path``, and an entry ``../train/images`` that does not exist there is read from
``path`` itself (Roboflow writes its exports so). ``names`` become ``data.classes`` in id order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from detect_ft.data.formats.yolo import yolo_names
from detect_ft.utils.errors import ConfigError
from detect_ft.utils.limits import short_repr


def is_yolo_dataset_file(data: Any, config_sections: Sequence[str]) -> bool:
    """Whether a parsed YAML mapping is an Ultralytics dataset file (it has ``names``) rather than a
    detect-ft config, whose ``config_sections`` hold mappings (a dataset file's ``train`` is a path)."""
    return (
        isinstance(data, dict)
        and "names" in data
        and not any(isinstance(data.get(section), dict) for section in config_sections)
    )


def yolo_dataset_section(file: Path, data: dict, *, need_train: bool = True) -> dict[str, Any]:
    """The ``data`` config section (format, root, train, val, classes) that the dataset file ``file``
    (parsed as ``data``) describes; a one-line ConfigError naming the entry and the fix otherwise.
    ``need_train``: a file without a ``train`` entry is an error (not when an override gives data.train)."""
    where = f"{file} (a YOLO dataset file)"
    ids = yolo_names(data.get("names"), where, ConfigError)
    if sorted(ids) != list(range(len(ids))):
        raise ConfigError(f"{where}: 'names' ids must be 0..{len(ids) - 1}, got {sorted(ids)}; number them from 0")
    nc = data.get("nc")
    if nc is not None and nc != len(ids):
        raise ConfigError(f"{where}: 'nc' is {short_repr(nc)} but 'names' lists {len(ids)}; make them agree")
    root = _dataset_root(file, data.get("path"), where)
    section: dict[str, Any] = {"format": "yolo", "root": str(root), "classes": [ids[i] for i in range(len(ids))]}
    for key in ("train", "val"):
        entry = _split_entry(root, data.get(key), f"{where} '{key}'")
        if entry is not None:
            section[key] = entry
    if "train" not in section and need_train:
        raise ConfigError(
            f"{where} has no 'train' entry; add train: <images folder or list file> (relative to {root}), "
            "or pass data.train=<split>"
        )
    return section


def _dataset_root(file: Path, path: Any, where: str) -> Path:
    if path in (None, ""):
        return file.parent
    if not isinstance(path, str):
        raise ConfigError(f"{where}: 'path' must be the dataset folder, got {short_repr(path)}")
    folder = Path(path).expanduser()
    if folder.is_absolute():
        return folder
    for base in (file.parent, Path.cwd()):
        if (base / folder).is_dir():
            return base / folder
    raise ConfigError(
        f"{where}: 'path' {path} is no folder beside the file nor under the current directory; "
        "set it to the dataset folder (absolute, or relative to the file)"
    )


def _split_entry(root: Path, entry: Any, where: str) -> Optional[str]:
    """A split's images folder or list file, relative to ``root`` unless absolute; None when not given."""
    if isinstance(entry, list) and len(entry) == 1:
        entry = entry[0]
    if entry in (None, ""):
        return None
    if not isinstance(entry, str):
        raise ConfigError(
            f"{where}: got {short_repr(entry)}; detect-ft reads one images folder or list file per split: "
            "list the images in one text file (a path per line) and name it here"
        )
    if not Path(entry).is_absolute() and not (root / entry).exists() and entry.startswith("../"):
        return entry[3:]
    return entry
