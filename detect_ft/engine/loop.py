"""``train_one_epoch``: the inner training loop, with AMP, accumulation, clipping, EMA and loss guards.

    stats = train_one_epoch(model, optimizer, loader, device, epoch=0, scheduler=scheduler)
    stats["loss"], stats["losses"], stats["img_s"]

The loop takes plain arguments (no Config) so that benchmarks and notebooks can call it directly; the
orchestration around it (data, checkpoints, validation) lives in :mod:`detect_ft.engine.trainer`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from typing import Any, Iterable, Optional

import torch
import torch.nn as nn

from detect_ft.engine.distributed import all_reduce_sum, all_true, is_distributed
from detect_ft.engine.ema import ModelEMA
from detect_ft.errors import DetectFTError


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    *,
    epoch: int = 0,
    scheduler: Optional[Any] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp_dtype: Optional[torch.dtype] = None,
    accumulate: int = 1,
    clip_grad_norm: Optional[float] = None,
    ema: Optional[ModelEMA] = None,
    max_iters: Optional[int] = None,
    max_nonfinite: int = 10,
    nonfinite_run: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` for one pass over ``loader`` (at most ``max_iters`` batches).

    Args:
        model: a torchvision detector (possibly DDP-wrapped); in train mode, ``model(images, targets)``
            returns a dict of scalar losses, which are summed.
        loader: yields ``(images, targets)``: a list of (3, H, W) float tensors in [0, 1] and a list of
            dicts with ``boxes`` (N, 4) float xyxy absolute pixels and ``labels`` (N,) int64 in 1..K.
        scheduler: stepped after every optimizer step.
        scaler: a GradScaler for fp16 autocast (None or disabled otherwise).
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` to run the forward pass under autocast; None
            for full precision.
        accumulate: batches whose gradients add up before one optimizer step (each loss is divided by
            it); the epoch's last partial window steps too.
        clip_grad_norm: clip the global gradient norm to this before each step.
        ema: updated after every optimizer step.
        max_nonfinite: a non-finite loss skips its batch (no backward); this many in a row (counted
            across epochs through ``nonfinite_run``) raise :class:`DetectFTError`.
        progress: show a tqdm bar with the running loss components, LR and img/s.

    Returns:
        ``iterations``, ``steps`` (optimizer steps), ``images``, ``time`` (s), ``img_s`` (summed over
        ranks), ``loss`` and ``losses`` (means over the finite batches of all ranks), ``lr`` (first
        group's LR at the end), ``skipped_steps`` (non-finite batches) and ``nonfinite_run``.
    """
    from tqdm import tqdm

    model.train()
    total = len(loader) if hasattr(loader, "__len__") else None
    num_iters = min(total, max_iters) if (total is not None and max_iters) else (max_iters or total)
    accumulate = max(int(accumulate), 1)
    distributed = is_distributed()
    scaling = scaler is not None and scaler.is_enabled()
    sums: dict[str, float] = {}
    finite_batches = images_seen = steps = skipped = iterations = 0
    bar = tqdm(total=num_iters, desc=f"epoch {epoch + 1}", unit="it", disable=not progress, dynamic_ncols=True,
               leave=True)  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    # islice stops before fetching a batch past the cap (a plain break would load one more).
    batches = itertools.islice(loader, num_iters) if num_iters is not None else loader
    for i, (images, targets) in enumerate(batches):
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        last_in_window = (i + 1) % accumulate == 0 or (num_iters is not None and i + 1 == num_iters)
        # Without a step coming, DDP must not all-reduce gradients that are still accumulating.
        sync = contextlib.nullcontext() if (last_in_window or not distributed) else model.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
            values = torch.stack([loss.detach()] + [v.detach() for v in loss_dict.values()]).float().tolist()
            # Every rank must take the same branch, or DDP's gradient all-reduce would wait forever.
            finite = all_true(all(math.isfinite(v) for v in values), device)
            if finite:
                loss = loss / accumulate
                (scaler.scale(loss) if scaling else loss).backward()
        images_seen += len(images)
        if finite:
            nonfinite_run = 0
            finite_batches += 1
            for name, value in zip(["loss", *loss_dict.keys()], values):
                sums[name] = sums.get(name, 0.0) + value
        else:
            skipped += 1
            nonfinite_run += 1
            if nonfinite_run >= max_nonfinite:
                bar.close()
                raise DetectFTError(
                    f"training stopped: the loss was not finite (nan/inf) for {nonfinite_run} batches in a row "
                    f"(epoch {epoch + 1}, batch {i + 1}; train.max_nonfinite={max_nonfinite}); lower train.lr, "
                    "add warmup (train.warmup_iters), set train.clip_grad_norm, or check the boxes with "
                    "detect-ft check-data"
                )
        if last_in_window:
            _step(model, optimizer, scaler if scaling else None, clip_grad_norm)
            steps += 1
            if scheduler is not None:
                scheduler.step()
            if ema is not None:
                ema.update(model)
        if progress:
            elapsed = time.perf_counter() - start
            shown = {k: v / max(finite_batches, 1) for k, v in sums.items()}
            postfix = {k: f"{v:.3f}" for k, v in shown.items()}
            postfix.update(lr=f"{optimizer.param_groups[0]['lr']:.2e}", **{"img/s": f"{images_seen / elapsed:.1f}"})
            bar.set_postfix(postfix, refresh=False)
        iterations += 1
        bar.update(1)
    seconds = time.perf_counter() - start
    bar.close()
    names = sorted(sums)
    reduced = all_reduce_sum([sums[n] for n in names] + [finite_batches, images_seen, seconds], device)
    count = max(reduced[len(names)], 1)
    world = torch.distributed.get_world_size() if distributed else 1
    means = {n: reduced[k] / count for k, n in enumerate(names)}
    return {
        "iterations": iterations,
        "steps": steps,
        "images": int(reduced[len(names) + 1]),
        "time": seconds,
        # every rank ran the same wall time; the mean keeps img/s honest if one rank was slower
        "img_s": reduced[len(names) + 1] / max(reduced[len(names) + 2] / world, 1e-9),
        "loss": means.pop("loss", float("nan")),
        "losses": means,
        "lr": optimizer.param_groups[0]["lr"],
        "skipped_steps": skipped,
        "nonfinite_run": nonfinite_run,
    }


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
          clip_grad_norm: Optional[float]) -> None:  # fmt: skip
    if clip_grad_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
