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
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterable, Optional

import torch
import torch.nn as nn

from detect_ft.engine.distributed import all_reduce_sum, all_true, is_distributed
from detect_ft.engine.ema import ModelEMA
from detect_ft.engine.optim import schedule_of
from detect_ft.utils.errors import DetectFTError

# Optimizer steps timed before a time budget's deadline may shorten the LR schedule (see end_schedule_by_deadline).
MIN_TIMED_STEPS = 2


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
    around_batch: Optional[Callable[[int], ContextManager[Any]]] = None,
    deadline: Optional[float] = None,
    ends_at: Optional[float] = None,
    step_seconds: Optional[float] = None,
) -> dict[str, Any]:
    """Train ``model`` for one pass over ``loader`` (at most ``max_iters`` batches).

    Args:
        model: a torchvision detector (possibly DDP-wrapped); in train mode, ``model(images, targets)``
            returns a dict of scalar losses, which are summed.
        loader: yields ``(images, targets)``: a list of (3, H, W) float tensors in [0, 1] and a list of
            dicts with ``boxes`` (N, 4) float xyxy absolute pixels and ``labels`` (N,) int64 in 1..K.
        scheduler, ema: stepped / updated after every optimizer step.
        scaler: a GradScaler for fp16 autocast (None or disabled otherwise).
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` to run the forward pass under autocast; None
            for full precision.
        accumulate: batches whose gradients add up before one optimizer step (each loss is divided by
            it); the epoch's last partial window steps too.
        clip_grad_norm: clip the global gradient norm to this before each step.
        max_nonfinite: a non-finite loss skips its batch (no backward); this many in a row (counted
            across epochs through ``nonfinite_run``) raise :class:`DetectFTError`.
        progress: show a tqdm bar with the running loss components, LR and img/s.
        around_batch: ``i -> context manager`` entered around batch ``i`` (0-based in the epoch) and the
            optimizer step it ends, if any; ``fit`` runs the hooks' ``before_step``/``after_step`` in it.
        deadline: a ``time.perf_counter()`` value after which no more batches are taken (a time budget
            running out); ``ends_at``: when the run's budget ends, shown on the progress bar as ``left``.
        step_seconds: the seconds an optimizer step is expected to take, the pace at which the LR schedule
            is fitted to ``deadline`` until the epoch has timed enough steps of its own (an epoch of only a
            few steps otherwise never does, and a deadline it hits leaves the LR above its end value).

    Returns:
        ``iterations``, ``steps`` (optimizer steps), ``images``, ``time`` (s), ``img_s`` (summed over
        ranks), ``loss`` and ``losses`` (means over the finite batches of all ranks), ``lr`` (first
        group's LR at the end), ``skipped_steps`` (non-finite batches) and ``nonfinite_run``.
    """
    loop = _EpochLoop(
        model,
        optimizer,
        device,
        epoch,
        scheduler,
        scaler if scaler is not None and scaler.is_enabled() else None,
        amp_dtype,
        max(int(accumulate), 1),
        clip_grad_norm,
        ema,
        max_nonfinite,
        progress,
        _Tally(nonfinite_run=nonfinite_run),
        deadline,
        ends_at,
        step_seconds,
    )
    return loop.run(loader, max_iters, around_batch)


@dataclass
class _EpochLoop:
    """One epoch of :func:`train_one_epoch`: its settings and its running tally."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    epoch: int
    scheduler: Optional[Any]
    scaler: Optional[torch.amp.GradScaler]
    amp_dtype: Optional[torch.dtype]
    accumulate: int
    clip_grad_norm: Optional[float]
    ema: Optional[ModelEMA]
    max_nonfinite: int
    progress: bool
    tally: _Tally
    deadline: Optional[float] = None
    ends_at: Optional[float] = None
    step_seconds: Optional[float] = None
    paced_from: Optional[tuple[float, int]] = None  # (time, optimizer steps) when the epoch's first step ended

    def run(
        self, loader: Iterable, max_iters: Optional[int], around_batch: Optional[Callable[[int], ContextManager[Any]]]
    ) -> dict[str, Any]:
        from tqdm import tqdm

        self.model.train()
        total = len(loader) if hasattr(loader, "__len__") else None
        num_iters = min(total, max_iters) if (total is not None and max_iters) else (max_iters or total)
        bar = tqdm(
            total=num_iters,
            desc=f"epoch {self.epoch + 1}",
            unit="it",
            disable=not self.progress,
            dynamic_ncols=True,
            leave=True,
        )
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        # islice stops before fetching a batch past the cap (a plain break would load one more).
        batches = itertools.islice(loader, num_iters) if num_iters is not None else loader
        with contextlib.closing(bar):
            for i, (images, targets) in enumerate(batches):
                last_in_window = (i + 1) % self.accumulate == 0 or (num_iters is not None and i + 1 == num_iters)
                with around_batch(i) if around_batch is not None else contextlib.nullcontext():
                    self.batch(i, images, targets, last_in_window)
                now = time.perf_counter()
                if self.progress:
                    bar.set_postfix(self.tally.postfix(self.optimizer, now - start, self.ends_at), refresh=False)
                self.tally.iterations += 1
                bar.update(1)
                if self.deadline is not None and now > self.deadline:
                    break  # the time budget ran out mid-epoch: the run validates and ends after it
            seconds = time.perf_counter() - start
        return self.tally.stats(self.optimizer, seconds, self.device)

    def batch(self, i: int, images: list[torch.Tensor], targets: list[dict], last_in_window: bool) -> None:
        """Forward and backward one batch; an optimizer step when it ends an accumulation window."""
        # Without a step coming, DDP must not all-reduce gradients that are still accumulating.
        sync = contextlib.nullcontext() if (last_in_window or not is_distributed()) else self.model.no_sync()
        with sync:
            losses = forward_backward(
                self.model, images, targets, self.device, self.amp_dtype, self.accumulate, self.scaler
            )
        self.tally.add(losses, len(images))
        if losses is None and self.tally.nonfinite_run >= self.max_nonfinite:
            raise DetectFTError(
                f"training stopped: the loss was not finite (nan/inf) for {self.tally.nonfinite_run} batches in a "
                f"row (epoch {self.epoch + 1}, batch {i + 1}; train.max_nonfinite={self.max_nonfinite}); lower "
                "train.lr, add warmup (train.warmup_iters), set train.clip_grad_norm, or check the boxes with "
                "detect-ft check-data"
            )
        # A GradScaler skips the step when the fp16 gradients overflowed (the first steps of most fp16
        # runs); the schedule and the EMA then wait too, or warm-up would be spent on skipped steps.
        if last_in_window and _step(self.model, self.optimizer, self.scaler, self.clip_grad_norm):
            self.tally.steps += 1
            if self.scheduler is not None:
                if self.deadline is not None:
                    self.end_schedule_by_deadline()
                self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)

    def end_schedule_by_deadline(self) -> None:
        """Shorten the LR schedule so that it ends by ``deadline``, at this epoch's pace (never lengthen it):
        a time budget running out mid-epoch still ends with the LR at its end value.

        The pace is timed from the end of the epoch's first step: that step also waits for the loader's
        workers to start, which can take longer than ten steps, and read as the pace it once cut a whole
        run's schedule to end a few steps later (every remaining epoch then trained at LR 0). Until
        ``MIN_TIMED_STEPS`` steps are timed, the budget's estimate ``step_seconds`` is the pace.
        """
        now = time.perf_counter()
        if self.paced_from is None:
            self.paced_from = (now, self.tally.steps)
        since, steps_then = self.paced_from
        timed_steps = self.tally.steps - steps_then
        if timed_steps >= MIN_TIMED_STEPS:
            per_step = (now - since) / timed_steps
        elif self.step_seconds is not None:
            per_step = self.step_seconds
        else:
            return
        steps_left = max(int((self.deadline - now) / max(per_step, 1e-9)), 0)
        last_step = self.scheduler.last_epoch + 1 + steps_left  # the step about to be taken counts
        for schedule in schedule_of(self.scheduler):
            if last_step < schedule.total_steps:
                schedule.set_total_steps(last_step)


def forward_backward(
    model: nn.Module,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    device: torch.device,
    amp_dtype: Optional[torch.dtype],
    accumulate: int,
    scaler: Optional[torch.amp.GradScaler],
) -> Optional[dict[str, float]]:
    """One batch's forward pass and (for a finite loss) backward pass; the losses as floats (``loss``
    first, then the model's components), or None when any is not finite on any rank."""
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    if len(images) == 1 and _has_training_batchnorm(model):
        # BatchNorm in training needs two values per channel, and a 1x1 feature map (SSDlite's last
        # levels, small multi-scale sizes) has one per image: a lone image goes in twice. Two copies have
        # the batch statistics of one, and every model's loss is a mean over the batch, so the
        # gradient is that of the one image.
        images, targets = images * 2, targets * 2
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss_dict = model(images, targets)
    loss = sum(loss_dict.values())
    values = torch.stack([loss.detach()] + [v.detach() for v in loss_dict.values()]).float().tolist()
    # Every rank must take the same branch, or DDP's gradient all-reduce would wait forever.
    if not all_true(all(math.isfinite(v) for v in values), device):
        return None
    loss = loss / accumulate
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return dict(zip(["loss", *loss_dict.keys()], values))


def _has_training_batchnorm(model: nn.Module) -> bool:
    """Whether any BatchNorm of ``model`` (timm's BatchNormAct2d and SyncBatchNorm included) is in training mode."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


@dataclass
class _Tally:
    """The running counts and loss sums of one epoch on this rank."""

    nonfinite_run: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    finite_batches: int = 0
    images: int = 0
    steps: int = 0
    skipped: int = 0
    iterations: int = 0

    def add(self, losses: Optional[dict[str, float]], num_images: int) -> None:
        """Count a batch: its losses, or (None) a skipped non-finite one."""
        self.images += num_images
        if losses is None:
            self.skipped += 1
            self.nonfinite_run += 1
            return
        self.nonfinite_run = 0
        self.finite_batches += 1
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def postfix(self, optimizer: torch.optim.Optimizer, elapsed: float, ends_at: Optional[float]) -> dict[str, str]:
        """The progress bar's running loss components, LR, img/s and (with a time budget) the time left."""
        shown = {k: f"{v / max(self.finite_batches, 1):.3f}" for k, v in self.sums.items()}
        shown.update(lr=f"{optimizer.param_groups[0]['lr']:.2e}", **{"img/s": f"{self.images / elapsed:.1f}"})
        if ends_at is not None:
            left = max(int(ends_at - time.perf_counter()), 0)
            shown["left"] = f"{left // 60}m{left % 60:02d}s"
        return shown

    def stats(self, optimizer: torch.optim.Optimizer, seconds: float, device: torch.device) -> dict[str, Any]:
        """What :func:`train_one_epoch` returns, the losses and throughput reduced over ranks."""
        names = sorted(self.sums)
        reduced = all_reduce_sum([self.sums[n] for n in names] + [self.finite_batches, self.images, seconds], device)
        count = max(reduced[len(names)], 1)
        world = torch.distributed.get_world_size() if is_distributed() else 1
        means = {n: reduced[k] / count for k, n in enumerate(names)}
        return {
            "iterations": self.iterations,
            "steps": self.steps,
            "images": int(reduced[len(names) + 1]),
            "time": seconds,
            # every rank ran the same wall time; the mean keeps img/s honest if one rank was slower
            "img_s": reduced[len(names) + 1] / max(reduced[len(names) + 2] / world, 1e-9),
            "loss": means.pop("loss", float("nan")),
            "losses": means,
            "lr": optimizer.param_groups[0]["lr"],
            "skipped_steps": self.skipped,
            "nonfinite_run": self.nonfinite_run,
        }


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Optional[torch.amp.GradScaler],
    clip_grad_norm: Optional[float],
) -> bool:
    """One optimizer step; False when the scaler skipped it (inf/nan fp16 gradients)."""
    if clip_grad_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    stepped = True
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale  # update() lowers the scale exactly when step() was skipped
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stepped


def choose_amp_dtype(amp: bool, device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; None off CUDA or with amp off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
