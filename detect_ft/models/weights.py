"""Where pretrained tensors come from: torchvision's COCO or ImageNet weights, or a local file.

torchvision's ``load_state_dict_from_url`` looks in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
before downloading, so a cached file works offline; when neither works the error names the file, the
cache folder and how to pass a local file instead.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.models._api import WeightsEnum

from detect_ft.errors import WeightsError
from detect_ft.limits import MAX_CHECKPOINT_BYTES, MAX_INPUT_SIDE, check_size


@dataclass
class SourceWeights:
    """A full-detector state dict and the class names its head rows stand for.

    Attributes:
        state: state dict of the whole detector (any class count).
        class_names: names for head rows 0..C-1 (row 0 background), or None when unknown.
        origin: where it came from, for messages.
    """

    state: dict[str, torch.Tensor]
    class_names: list[str] | None
    origin: str


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's weights from the hub cache, downloading them when absent.

    Raises:
        WeightsError: offline (or the download failed) and the file is not cached.
    """
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as exc:  # URLError, socket and HTTP errors are all OSErrors
        raise download_error(weights, exc) from None


def download_error(weights: WeightsEnum, exc: BaseException) -> WeightsError:
    """The error for weights that are neither cached nor downloadable: names the file, cache and fixes."""
    return WeightsError(
        f"cannot download pretrained weights {os.path.basename(weights.url)} ({exc}); put the file into the "
        f"torch hub cache {cache_dir()} (from {weights.url}), or pass a local file with "
        f"model.weights=/path/to/weights.pth, or use a model whose ImageNet weights install offline "
        f"(model.name=ssdlite320_efficientnet_lite0 model.weights=imagenet), or train from scratch with "
        f"model.weights=none"
    )


def safe_torch_load(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, with one-line errors.

    ``weights_only`` unpickles tensors and plain values (dict, list, tuple, str, int, float, bool,
    None) only, so a file carrying pickled code or objects of other types is refused before any of it
    runs; detect-ft's own checkpoints hold nothing else (docs/safety.md says how to convert a trusted
    file written by other tools). Exactly one more kind is allowed: NumPy arrays (``ndarray``, ``dtype``
    and ``_reconstruct``, which build an array and nothing else), because checkpoints written by earlier
    detect-ft versions keep NumPy's RNG state as one.

    Args:
        what: what the file is for, naming the config key or command in messages ("model.weights").

    Raises:
        WeightsError: the file is missing, too large, not a torch file, or needs unsafe unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what}: file {path} not found; pass the path of a detect-ft checkpoint or state dict")
    check_size(path, MAX_CHECKPOINT_BYTES, f"{what}: file", WeightsError)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>", str(exc))
        if found is None:  # not a pickled object, just bytes that are no torch file
            raise WeightsError(
                f"{what}: {path} is not a readable checkpoint or torch file; pass another file"
            ) from None
        raise WeightsError(
            f"{what}: refused to load {path}: it holds pickled Python objects ({found.group(1) or found.group(2)}) whose loading could "
            "run code; detect-ft loads only tensors and plain values. If you trust the file, convert it as "
            "docs/safety.md shows"
        ) from None
    except Exception as exc:  # torch raises several types for corrupt, truncated or foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{what}: {path} is not a readable checkpoint or torch file ({reason}); pass another "
                           "file") from None  # fmt: skip


def _numpy_array_globals() -> list:
    """What unpickling a NumPy array needs: the array type, dtypes and the array constructor."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # NumPy 2 renamed numpy.core to numpy._core
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64)  # fmt: skip
    dtype_classes = {type(np.dtype(t)) for t in numeric} - {np.dtype}  # numpy.dtypes.UInt32DType ... (NumPy >= 1.25)
    return [np.ndarray, np.dtype, core.multiarray._reconstruct, *sorted(dtype_classes, key=str)]


def check_checkpoint(checkpoint: Any, path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """``checkpoint`` if it has the shape of a detect-ft checkpoint (docs/architecture.md), else WeightsError.

    A file that loads safely can still hold anything; this checks the fields the loaders read, so a
    foreign or tampered file gives one line instead of a traceback deep inside model building.
    """

    def bad(why: str) -> WeightsError:
        return WeightsError(f"{what}: {path} is not a detect-ft checkpoint ({why}); pass a run's "
                            "checkpoints/best.pt or last.pt")  # fmt: skip

    if not isinstance(checkpoint, dict) or "model_name" not in checkpoint or "model" not in checkpoint:
        raise bad("no model_name/model entries")
    if not isinstance(checkpoint["model_name"], str):
        raise bad("model_name is not a string")
    state = checkpoint["model"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise bad("model is not a state dict of tensors")
    num_classes = checkpoint.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise bad(f"num_classes is {str(num_classes)[:40]!r}, not a positive integer")
    names = checkpoint.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != num_classes
                              or not all(isinstance(n, str) for n in names)):  # fmt: skip
        raise bad(f"class_names is not a list of {num_classes} strings")
    ids = checkpoint.get("category_ids")
    if ids is not None and (not isinstance(ids, list) or len(ids) != num_classes
                            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):  # fmt: skip
        raise bad(f"category_ids is not a list of {num_classes} integers")
    config = checkpoint.get("config", {})
    if not isinstance(config, dict) or not isinstance(config.get("model", {}), dict):
        raise bad("config is not a mapping of sections")
    options = config.get("model", {})
    for key, low, high in (("min_size", 1, MAX_INPUT_SIDE), ("max_size", 1, MAX_INPUT_SIDE),
                           ("detections_per_img", 1, 100_000)):  # fmt: skip
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise bad(f"config.model.{key} is {str(value)[:40]!r}, not an integer in {low}..{high}")
    thresh = options.get("score_thresh")
    if thresh is not None and (
        isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not 0 <= thresh <= 1
    ):
        raise bad(f"config.model.score_thresh is {str(thresh)[:40]!r}, not a number in [0, 1]")
    return checkpoint


def read_weights_file(path: str | os.PathLike, model_name: str) -> SourceWeights:
    """Load a full-detector state dict or a detect-ft checkpoint from ``path``.

    A detect-ft checkpoint carries its model name and class names, so its head rows can be matched by
    name; a bare 91-class state dict is taken to use torchvision's COCO class order.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"model.weights: file {path} not found; give coco, imagenet, none or the path of a state dict / "
            f"detect-ft checkpoint"
        )
    obj: Any = safe_torch_load(path, "model.weights")
    class_names = None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        saved_name = obj.get("model_name")
        if saved_name is not None and saved_name != model_name:
            raise WeightsError(
                f"model.weights: {path} holds a {saved_name} checkpoint but model.name is {model_name}; "
                f"set model.name={saved_name} or pick another weights file"
            )
        if obj.get("class_names") is not None:
            class_names = ["__background__", *obj["class_names"]]
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"model.weights: {path} is neither a state dict nor a detect-ft checkpoint")
    state = {k.removeprefix("module."): v for k, v in obj.items()}  # DDP-saved files prefix every key
    return SourceWeights(state=state, class_names=class_names, origin=str(path))
