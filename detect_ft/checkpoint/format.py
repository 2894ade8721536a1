"""The checkpoint file format: its keys, its version, the one safe writer and the one reader.

    write_checkpoint(path, {MODEL: state_dict, MODEL_NAME: "fcos_resnet50_fpn", ...})
    checkpoint = read_checkpoint(path, "checkpoint")                   # load_detector: a model to rebuild
    checkpoint = read_checkpoint(path, "train.resume", need="training")  # plus the training state
    checkpoint = read_checkpoint(path, "model.weights", need="weights")  # a bare state dict is fine too

Every key is defined once here (:data:`KEYS`, the table docs/architecture.md "Checkpoints" shows).
``format_version`` says which layout a file has: files written before it existed are version 0 (the same
keys) and still read; a file of a newer version than :data:`FORMAT_VERSION` is refused with a message
that says so, instead of failing somewhere later.

A checkpoint holds tensors and plain Python values only (dicts, lists, tuples, str, int, float, bool,
None), so it loads with ``torch.load(..., weights_only=True)``: a file that needs anything else to
unpickle (code, or objects of other types) is refused, and no code from it runs. Every error of the
reader is a :class:`CheckpointError` naming the file and the fix. This module sits low in the import
graph: it knows nothing of models or training, which build on it.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from detect_ft._version import __version__
from detect_ft.utils.atomic_io import torch_save_atomic
from detect_ft.utils.errors import WeightsError
from detect_ft.utils.limits import MAX_CHECKPOINT_BYTES, MAX_INPUT_SIDE, check_size

# The layout this code writes; bump it (and teach the reader the old one) when a key changes meaning.
FORMAT_VERSION = 1

MODEL = "model"
MODEL_NAME = "model_name"
NUM_CLASSES = "num_classes"
CLASS_NAMES = "class_names"
CATEGORY_IDS = "category_ids"
CONFIG = "config"
EPOCH = "epoch"
ITERATION = "iteration"
OPTIMIZER = "optimizer"
SCHEDULER = "scheduler"
SCALER = "scaler"
EMA = "ema"
RNG = "rng"
METRICS = "metrics"
TRAINER = "trainer"
NORMALISATION = "normalisation"
VERSION = "version"
FORMAT = "format_version"

# Inside the ``ema`` entry: the raw training weights (``model`` holds the average then).
EMA_TRAINING_MODEL = "training_model"

KEYS: dict[str, str] = {
    MODEL: "detector state_dict to evaluate and deploy (the EMA weights when EMA is on)",
    MODEL_NAME: "registry name of the detector",
    NUM_CLASSES: "the user's classes K (background excluded)",
    CLASS_NAMES: "the K class names, label k is class_names[k-1]",
    CATEGORY_IDS: "the dataset's category id of each class, to write predictions back",
    CONFIG: "the resolved config as a plain dict",
    EPOCH: "completed epochs",
    ITERATION: "optimizer steps done",
    OPTIMIZER: "optimizer state_dict",
    SCHEDULER: "LR scheduler state_dict",
    SCALER: "fp16 GradScaler state_dict, or None",
    EMA: "training_model (raw weights), decay, warmup_power; None without EMA",
    RNG: "per rank: Python, NumPy, torch (and CUDA) generator states",
    METRICS: "the last validation metrics",
    TRAINER: "the trainer's bookkeeping: best_value, best_epoch, stale, nonfinite_run",
    NORMALISATION: "mean and std of the model's input normalisation",
    VERSION: "the detect-ft version that wrote it",
    FORMAT: "the layout version of the file (absent: 0)",
}

Need = Literal["weights", "model", "training"]

_NOT_FOUND = {
    "weights": "{what}: file {path} not found; give coco, imagenet, none or the path of a state dict / detect-ft "
    "checkpoint",
    "model": "{what} {path} not found; pass a run's checkpoints/best.pt or last.pt",
    "training": "{what}: checkpoint {path} not found; pass a run's checkpoints/last.pt or 'auto'",
}


class CheckpointError(WeightsError):
    """A file that is not a readable detect-ft checkpoint (or weights file) of a format this code reads."""


def write_checkpoint(path: str | os.PathLike, entries: dict[str, Any]) -> None:
    """Write ``entries`` with :data:`FORMAT` and :data:`VERSION` added, atomically (temporary file, then
    rename): a kill mid-write leaves the previous file.

    Raises:
        ValueError: a key that is not in :data:`KEYS` (a programming error, not a user's).
    """
    unknown = sorted(set(entries) - set(KEYS))
    if unknown:
        raise ValueError(f"not checkpoint keys: {unknown}; add them to detect_ft.checkpoint.format.KEYS and the docs")
    torch_save_atomic({**entries, VERSION: __version__, FORMAT: FORMAT_VERSION}, path)


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays turned into Python numbers and lists (metrics dicts hold
    them), so that the checkpoint loads with ``weights_only=True``."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", *, need: Need = "model") -> dict[str, Any]:
    """Load a checkpoint safely onto the CPU and check what the caller reads from it.

    Args:
        what: the config key or command the file is for, starting every message ("model.weights").
        need: ``model``: a detect-ft checkpoint a model can be rebuilt from (``model_name``, ``model``,
            ``num_classes``); ``training``: also the training state ``train.resume`` continues from;
            ``weights``: any file with a full-detector state dict, a bare one being returned as
            ``{"model": state_dict}`` and the other entries optional.

    Raises:
        CheckpointError: missing, too large, unreadable, unsafe to unpickle, of a newer format, or
            without what ``need`` asks for; the message names the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(_NOT_FOUND[need].format(what=what, path=path))
    obj = safe_torch_load(path, what)
    if need == "weights":
        return _as_weights(obj, path, what)
    if need == "training":
        return _as_training(obj, path, what)
    return check_checkpoint(obj, path, what)


# How torch's weights_only unpickler names what it refused: a global it does not allow, or one of a
# blocked module (os, subprocess ...: "Trying to load unsupported GLOBAL posix.system whose module posix
# is blocked"), an object of a class it does not build, or a function it will not call.
_PICKLED_OBJECT = re.compile(
    r"GLOBAL ([\w.]+)|but got <class '([^']+)'>|unrecognized function <?(?:built-in function |function )?([\w.]+)"
)


def safe_torch_load(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, with one-line errors.

    ``weights_only`` unpickles tensors and plain values (dict, list, tuple, str, int, float, bool,
    None) only, so a file carrying pickled code or objects of other types is refused before any of it
    runs; detect-ft's own checkpoints hold nothing else (docs/safety.md says how to convert a trusted
    file written by other tools). Exactly one more kind is allowed: NumPy arrays (``ndarray``, ``dtype``
    and ``_reconstruct``, which build an array and nothing else), because checkpoints written by earlier
    detect-ft versions keep NumPy's RNG state as one.

    Raises:
        CheckpointError: the file is missing, too large, not a torch file, or needs unsafe unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: file {path} not found; pass the path of a detect-ft checkpoint or state dict")
    check_size(path, MAX_CHECKPOINT_BYTES, f"{what}: file", CheckpointError)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _PICKLED_OBJECT.search(str(exc))
        if found is None:  # not a pickled object, just bytes that are no torch file
            raise CheckpointError(
                f"{what}: {path} is not a readable checkpoint or torch file; pass another file"
            ) from None
        raise CheckpointError(
            f"{what}: refused to load {path}: it holds pickled Python objects ({next(filter(None, found.groups()))}) "
            "whose loading could run code; detect-ft loads only tensors and plain values. If you trust the file, "
            "convert it as docs/safety.md shows"
        ) from None
    except Exception as exc:  # torch raises several types for corrupt, truncated or foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{what}: {path} is not a readable checkpoint or torch file ({reason}); pass another file"
        ) from None


def _numpy_array_globals() -> list:
    """What unpickling a NumPy array needs: the array type, dtypes and the array constructor."""
    core = getattr(np, "_core", None) or np.core  # NumPy 2 renamed numpy.core to numpy._core
    numeric = (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
    dtype_classes = {type(np.dtype(t)) for t in numeric} - {np.dtype}  # numpy.dtypes.UInt32DType ... (NumPy >= 1.25)
    return [np.ndarray, np.dtype, core.multiarray._reconstruct, *sorted(dtype_classes, key=str)]


def is_state_dict(obj: Any) -> bool:
    """True for a dict from parameter names to tensors (a bare ``state_dict``)."""
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def format_version(checkpoint: dict[str, Any], path: str | os.PathLike, what: str = "checkpoint") -> int:
    """The checkpoint's layout version (0 when absent); CheckpointError for one newer than this code reads."""
    version = checkpoint.get(FORMAT, 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise _not_a_checkpoint(path, what, f"{FORMAT} is {str(version)[:40]!r}, not a count")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{what}: {path} has checkpoint format {version} (written by detect-ft {str(checkpoint.get(VERSION))[:40]}), "
            f"newer than the format {FORMAT_VERSION} this detect-ft {__version__} reads; upgrade detect-ft to read it"
        )
    return version


def check_checkpoint(checkpoint: Any, path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """``checkpoint`` if it is a detect-ft checkpoint a model can be rebuilt from, else CheckpointError.

    A file that loads safely can still hold anything; this checks the entries the loaders read, so a
    foreign or tampered file gives one line instead of a traceback deep inside model building.
    """
    if not isinstance(checkpoint, dict) or MODEL_NAME not in checkpoint or MODEL not in checkpoint:
        raise _not_a_checkpoint(path, what, "no model_name/model entries")
    format_version(checkpoint, path, what)
    _check_entries(checkpoint, path, what, complete=True)
    return checkpoint


def _as_training(obj: Any, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or MODEL not in obj or EPOCH not in obj:
        raise CheckpointError(f"{what}: {path} is not a detect-ft training checkpoint; pass checkpoints/last.pt")
    format_version(obj, path, what)
    if obj.get(OPTIMIZER) is None:
        raise CheckpointError(
            f"{what}: {path} holds weights but no training state; resume from last.pt, or start a new "
            f"run with model.weights={path}"
        )
    check_checkpoint(obj, path, what)
    for key in (EPOCH, ITERATION):
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(
                f"{what}: {path} has {key}={str(value)[:40]!r}, not a count; pass checkpoints/last.pt"
            )
    return obj


def _as_weights(obj: Any, path: Path, what: str) -> dict[str, Any]:
    if isinstance(obj, dict) and isinstance(obj.get(MODEL), dict):  # a checkpoint: its other entries are optional
        format_version(obj, path, what)
        _check_entries(obj, path, what, complete=False)
        return obj
    if is_state_dict(obj):
        return {MODEL: obj}
    raise CheckpointError(f"{what}: {path} is neither a state dict nor a detect-ft checkpoint")


def _not_a_checkpoint(path: str | os.PathLike, what: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{what}: {path} is not a detect-ft checkpoint ({why}); pass a run's checkpoints/best.pt or last.pt"
    )


def _check_entries(checkpoint: dict[str, Any], path: str | os.PathLike, what: str, complete: bool) -> None:
    """The entries model building reads; ``complete``: ``model_name`` and ``num_classes`` must be there."""

    def bad(why: str) -> CheckpointError:
        return _not_a_checkpoint(path, what, why)

    name = checkpoint.get(MODEL_NAME)
    if (complete or name is not None) and not isinstance(name, str):
        raise bad("model_name is not a string")
    if not is_state_dict(checkpoint[MODEL]):
        raise bad("model is not a state dict of tensors")
    num_classes = checkpoint.get(NUM_CLASSES)
    if (complete or num_classes is not None) and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise bad(f"num_classes is {str(num_classes)[:40]!r}, not a positive integer")
    for key, kind in ((CLASS_NAMES, str), (CATEGORY_IDS, int)):
        values = checkpoint.get(key)
        if values is not None and (
            not isinstance(values, list)
            or (num_classes is not None and len(values) != num_classes)
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values)
        ):
            raise bad(f"{key} is not a list of {num_classes or 'K'} {'strings' if kind is str else 'integers'}")
    _check_model_options(checkpoint.get(CONFIG, {}), bad)


def _check_model_options(config: Any, bad) -> None:
    """The saved ``config.model`` options that size the model's input and output."""
    if not isinstance(config, dict) or not isinstance(config.get("model", {}), dict):
        raise bad("config is not a mapping of sections")
    options = config.get("model", {})
    for key, low, high in (
        ("min_size", 1, MAX_INPUT_SIDE),
        ("max_size", 1, MAX_INPUT_SIDE),
        ("detections_per_img", 1, 100_000),
    ):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            raise bad(f"config.model.{key} is {str(value)[:40]!r}, not an integer in {low}..{high}")
    thresh = options.get("score_thresh")
    if thresh is not None and (
        isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not 0 <= thresh <= 1
    ):
        raise bad(f"config.model.score_thresh is {str(thresh)[:40]!r}, not a number in [0, 1]")


def input_normalisation(model: torch.nn.Module) -> dict[str, list[float]] | None:
    """The ``mean`` and ``std`` a torchvision detector's transform normalises [0, 1] RGB inputs with (the
    backbone's pretraining values; checkpoints and exported models carry them); None for a model without
    such a transform."""
    transform = getattr(model, "transform", None)
    if transform is None:
        return None
    return {"mean": [float(v) for v in transform.image_mean], "std": [float(v) for v in transform.image_std]}


def set_input_normalisation(model: torch.nn.Module, normalisation: Any) -> None:
    """Make ``model`` normalise as :func:`input_normalisation` said; a checkpoint without it keeps the
    model's defaults."""
    if isinstance(normalisation, dict) and {"mean", "std"} <= set(normalisation):
        model.transform.image_mean = [float(v) for v in normalisation["mean"]]
        model.transform.image_std = [float(v) for v in normalisation["std"]]
