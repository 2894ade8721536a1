"""Training checkpoints: atomic save, load, and everything ``train.resume`` needs to continue exactly.

The file layout is the contract in docs/architecture.md ("Checkpoints"): ``model`` holds the weights to
evaluate and deploy (the EMA weights when EMA is on) and ``ema`` then holds the raw training weights, so
``load_detector`` always gets the deployable model. ``trainer`` holds the trainer's own bookkeeping
(best metric, early-stopping count, non-finite count).

A checkpoint holds tensors and plain Python values only (dicts, lists, tuples, str, int, float, bool,
None), so it loads with ``torch.load(..., weights_only=True)``: a file that needs anything else to
unpickle (code, or objects of other types) is refused, and no code from it runs. See
:func:`detect_ft.models.weights.safe_torch_load`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from detect_ft import __version__
from detect_ft.engine.ema import ModelEMA, unwrap
from detect_ft.errors import DetectFTError
from detect_ft.io import torch_save_atomic
from detect_ft.models.weights import check_checkpoint, safe_torch_load


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and (when present) CUDA generator states.

    Plain values and tensors only (see the module doc): NumPy's MT19937 key becomes an int64 tensor.
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
        },  # fmt: skip
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
    ema: Optional[ModelEMA] = None,
    rng: Optional[list[dict[str, Any]]] = None,
    metrics: Optional[dict[str, Any]] = None,
    trainer: Optional[dict[str, Any]] = None,
) -> None:
    """Write a checkpoint atomically (temporary file, then rename): a kill mid-write leaves the old one.

    Args:
        model: the training model (wrapped in DDP or not).
        epoch: completed epochs; iteration: optimizer steps done so far.
        rng: one :func:`rng_state` per rank, in rank order.
    """
    raw = unwrap(model).state_dict()
    checkpoint: dict[str, Any] = {
        "model": ema.module.state_dict() if ema is not None else raw,
        "model_name": model_name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "category_ids": [int(c) for c in category_ids],
        "config": plain(config),
        "epoch": int(epoch),
        "iteration": int(iteration),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "ema": {"training_model": raw, "updates": ema.updates, "decay": ema.decay, "tau": ema.tau} if ema else None,
        "rng": rng,
        "metrics": plain(metrics or {}),
        "trainer": plain(trainer or {}),
        "normalisation": input_normalisation(unwrap(model)),
        "version": __version__,
    }
    torch_save_atomic(checkpoint, path)


def input_normalisation(model: nn.Module) -> Optional[dict[str, list[float]]]:
    """The ``mean`` and ``std`` a torchvision detector's transform normalises [0, 1] RGB inputs with (the
    backbone's pretraining values), saved in checkpoints so they travel with the weights; None for a
    model without such a transform."""
    transform = getattr(model, "transform", None)
    if transform is None:
        return None
    return {"mean": [float(v) for v in transform.image_mean], "std": [float(v) for v in transform.image_std]}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a detect-ft training checkpoint onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise DetectFTError(f"train.resume: checkpoint {path} not found; pass a run's checkpoints/last.pt or 'auto'")
    checkpoint = safe_torch_load(path, "train.resume")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "epoch" not in checkpoint:
        raise DetectFTError(f"train.resume: {path} is not a detect-ft training checkpoint; pass checkpoints/last.pt")
    if checkpoint.get("optimizer") is None:
        raise DetectFTError(
            f"train.resume: {path} holds weights but no training state; resume from last.pt, or start a new "
            f"run with model.weights={path}"
        )
    check_checkpoint(checkpoint, path, "train.resume")
    for key in ("epoch", "iteration"):
        value = checkpoint.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DetectFTError(
                f"train.resume: {path} has {key}={str(value)[:40]!r}, not a count; pass checkpoints/last.pt"
            )
    return checkpoint


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


def restore_training_state(
    checkpoint: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Optional[Any] = None,
    ema: Optional[ModelEMA] = None,
) -> None:
    """Load weights, optimizer, scheduler, scaler and EMA state saved by :func:`save_checkpoint`.

    A checkpoint written with EMA on keeps the raw weights in ``ema``; resuming it with EMA off trains
    on from those raw weights, and with EMA newly on the average starts from the loaded weights.
    """
    saved_ema = checkpoint.get("ema")
    training_weights = saved_ema["training_model"] if saved_ema else checkpoint["model"]
    unwrap(model).load_state_dict(training_weights)
    optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and scaler.is_enabled() and checkpoint.get("scaler") is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    if ema is not None:
        if saved_ema:
            # Decay and tau stay as configured now; only the average and its step count come back.
            ema.load_state_dict({"module": checkpoint["model"], "updates": saved_ema["updates"]})
        else:
            ema.module.load_state_dict(training_weights)
