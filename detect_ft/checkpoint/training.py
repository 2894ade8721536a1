"""Training checkpoints: what ``train`` saves each epoch and everything ``train.resume`` needs to continue
exactly (RNG states, optimizer, scheduler, scaler and EMA restored).

The file format itself (keys, version, safe reading) belongs to :mod:`detect_ft.checkpoint.format`, the one
reader and writer; this module turns the training objects into its entries and back. ``model`` holds the
weights to evaluate and deploy (the EMA weights when EMA is on) and ``ema`` then holds the raw training
weights and the EMA's settings, so ``load_detector`` always gets the deployable model. The EMA is timm's
``ModelEmaV3``; its warm-up step is the checkpoint's ``iteration``, so it needs no counter of its own.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
import torch.nn as nn

from detect_ft.checkpoint import format as ckpt
from detect_ft.checkpoint.format import input_normalisation, plain, read_checkpoint, write_checkpoint
from detect_ft.utils.errors import DetectFTError

if TYPE_CHECKING:
    from timm.utils.model_ema import ModelEmaV3

__all__ = [
    "load_checkpoint",
    "plain",
    "resolve_resume",
    "restore_training_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and (when present) CUDA generator states.

    Plain values and tensors only (see :mod:`detect_ft.checkpoint.format`): NumPy's MT19937 key becomes an int64 tensor.
    """
    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where the device count matches)."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    else:  # a checkpoint of an earlier detect-ft: NumPy's own state tuple, its key an array
        np.random.set_state(tuple(n))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants the nested tuples ``random.getstate`` gave, whatever a loader made of them."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    model_name: str,
    class_names: list[str],
    category_ids: list[int],
    config: dict[str, Any],
    epoch: int,
    iteration: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[Any] = None,
    ema: Optional[ModelEmaV3] = None,
    rng: Optional[list[dict[str, Any]]] = None,
    metrics: Optional[dict[str, Any]] = None,
    trainer: Optional[dict[str, Any]] = None,
) -> None:
    """Write a checkpoint atomically (temporary file, then rename): a kill mid-write leaves the old one.

    Args:
        model: the training model, unwrapped from DDP (``engine.distributed.unwrap``).
        epoch: completed epochs; iteration: optimizer steps done so far.
        rng: one :func:`rng_state` per rank, in rank order.
    """
    deployed, ema_entry = _model_and_ema_entries(model, ema)
    entries = {
        ckpt.MODEL: deployed,
        ckpt.MODEL_NAME: model_name,
        ckpt.NUM_CLASSES: len(class_names),
        ckpt.CLASS_NAMES: list(class_names),
        ckpt.CATEGORY_IDS: [int(c) for c in category_ids],
        ckpt.CONFIG: plain(config),
        ckpt.EPOCH: int(epoch),
        ckpt.ITERATION: int(iteration),
        ckpt.OPTIMIZER: optimizer.state_dict() if optimizer is not None else None,
        ckpt.SCHEDULER: scheduler.state_dict() if scheduler is not None else None,
        ckpt.SCALER: scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        ckpt.EMA: ema_entry,
        ckpt.RNG: rng,
        ckpt.METRICS: plain(metrics or {}),
        ckpt.TRAINER: plain(trainer or {}),
        ckpt.NORMALISATION: input_normalisation(model),
    }
    write_checkpoint(path, entries)


def _model_and_ema_entries(model: nn.Module, ema: Optional[ModelEmaV3]) -> tuple[dict, Optional[dict]]:
    """The ``model`` and ``ema`` entries. With EMA on, the average (``ema.module``) is the model to deploy,
    and ``ema`` holds the raw training weights and the EMA's ``decay`` and ``warmup_power``."""
    raw = model.state_dict()
    if ema is None:
        return raw, None
    return ema.module.state_dict(), {
        ckpt.EMA_TRAINING_MODEL: raw,
        "decay": float(ema.decay),
        "warmup_power": float(ema.warmup_power),
    }


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a detect-ft training checkpoint onto the CPU (see :func:`detect_ft.checkpoint.format.read_checkpoint`).

    Raises:
        CheckpointError: missing, unsafe, of a newer format, or without training state.
    """
    return read_checkpoint(path, "train.resume", need="training")


def resolve_resume(resume: str, run_dir: Path) -> Optional[Path]:
    """The checkpoint to resume from: ``""`` -> None, ``auto`` -> run_dir's last.pt if it exists, else PATH."""
    if not resume:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise DetectFTError(f"train.resume: checkpoint {path} not found; pass a run's checkpoints/last.pt or 'auto'")
    return path


def check_resumable(
    checkpoint: dict[str, Any],
    path: Optional[Path],
    *,
    model_name: str,
    class_names: list[str],
    anchor_sizes: list,
    anchor_ratios: list,
) -> None:
    """Refuse to resume ``checkpoint`` (read from ``path``) into a run of another model, other classes or
    other anchors (``[]``: the model's defaults)."""
    if checkpoint.get(ckpt.MODEL_NAME) != model_name:
        raise DetectFTError(
            f"train.resume: {path} trained {checkpoint.get(ckpt.MODEL_NAME)} but model.name is "
            f"{model_name}; resume with the same model.name"
        )
    if list(checkpoint.get(ckpt.CLASS_NAMES, [])) != class_names:
        raise DetectFTError(
            f"train.resume: {path} has classes {checkpoint.get(ckpt.CLASS_NAMES)} but the data has "
            f"{class_names}; resume with the same data.classes"
        )
    # Anchors are no tensors of the state dict: only the saved config says which ones the heads learnt.
    saved = (checkpoint.get(ckpt.CONFIG) or {}).get("model") or {}
    for key, value in (("anchor_sizes", anchor_sizes), ("anchor_ratios", anchor_ratios)):
        before, now = _nested_floats(saved.get(key) or []), _nested_floats(value or [])
        if before != now:
            raise DetectFTError(
                f"train.resume: {path} was trained with model.{key}={before or 'the defaults'} but this run has "
                f"{now or 'the defaults'}; resume with the same model.anchors and model.{key}"
            )


def _nested_floats(value: Any) -> Any:
    return [_nested_floats(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


def restore_training_state(
    checkpoint: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Optional[Any] = None,
    ema: Optional[ModelEmaV3] = None,
) -> None:
    """Load weights, optimizer, scheduler, scaler and EMA state saved by :func:`save_checkpoint`.

    A checkpoint written with EMA on keeps the raw weights in ``ema``; resuming it with EMA off trains
    on from those raw weights, and with EMA newly on the average starts from the loaded weights. The
    EMA's decay and warm-up are the run's config, whatever the checkpoint's ``ema`` entry says: one of
    an earlier detect-ft (its own ``ModelEMA``: ``updates``, ``decay``, ``tau``) resumes too, its average
    then warming up as timm's ``ModelEmaV3`` does.
    """
    saved_ema = checkpoint.get(ckpt.EMA)
    training_weights = saved_ema[ckpt.EMA_TRAINING_MODEL] if saved_ema else checkpoint[ckpt.MODEL]
    model.load_state_dict(training_weights)
    optimizer.load_state_dict(checkpoint[ckpt.OPTIMIZER])
    if checkpoint.get(ckpt.SCHEDULER) is not None:
        scheduler.load_state_dict(checkpoint[ckpt.SCHEDULER])
    if scaler is not None and scaler.is_enabled() and checkpoint.get(ckpt.SCALER) is not None:
        scaler.load_state_dict(checkpoint[ckpt.SCALER])
    if ema is not None:
        ema.module.load_state_dict(checkpoint[ckpt.MODEL] if saved_ema else training_weights)
