"""The parts of a training step that :func:`~detect_ft.engine.fit.run_step` puts together: one batch's
forward and backward pass (:func:`forward_backward`), the epoch's running tally (:class:`EpochTally`),
a time budget's LR schedule fitted to its deadline (:func:`fit_schedule_to_deadline`), and the AMP dtype.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn as nn

from detect_ft.engine.distributed import all_reduce_sum, all_true, is_distributed
from detect_ft.engine.optim import schedule_of

if TYPE_CHECKING:
    from detect_ft.engine.run import Run

# Optimizer steps timed before a time budget's deadline may shorten the LR schedule (see fit_schedule_to_deadline).
MIN_TIMED_STEPS = 2


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
    first, then the model's components), or None when any is not finite on any rank.

    ``images``: (3, H, W) float tensors in [0, 1]; ``targets``: dicts with ``boxes`` (N, 4) float xyxy
    absolute pixels and ``labels`` (N,) int64 in 1..K; the loss is divided by ``accumulate``.
    """
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
class EpochTally:
    """The running counts and loss sums of one epoch on this rank, and when its pace was first timed
    (``paced_from``: time and optimizer steps at the end of its first step, for :func:`fit_schedule_to_deadline`)."""

    nonfinite_run: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    finite_batches: int = 0
    images: int = 0
    steps: int = 0
    skipped: int = 0
    iterations: int = 0
    paced_from: Optional[tuple[float, int]] = None

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
        """What :func:`~detect_ft.engine.fit.train_one_epoch` returns, the losses and throughput reduced over ranks."""
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


def fit_schedule_to_deadline(run: Run, tally: EpochTally) -> None:
    """Shorten the LR schedule so that it ends by the time budget's training deadline, at this epoch's pace
    (never lengthen it): a budget running out mid-epoch still ends with the LR at its end value. Called
    after each optimizer step, before the scheduler's step; nothing without a budget or under DDP.

    The pace is timed from the end of the epoch's first step: that step also waits for the loader's
    workers to start, which can take longer than ten steps, and read as the pace it once cut a whole
    run's schedule to end a few steps later (every remaining epoch then trained at LR 0). Until
    ``MIN_TIMED_STEPS`` steps are timed, the budget's estimate of a step is the pace.
    """
    deadline = run.budget.training_deadline(run) if run.budget is not None else None
    if deadline is None:
        return
    now = time.perf_counter()
    if tally.paced_from is None:
        tally.paced_from = (now, tally.steps)
    since, steps_then = tally.paced_from
    timed_steps = tally.steps - steps_then
    per_step = (now - since) / timed_steps if timed_steps >= MIN_TIMED_STEPS else run.budget.step_seconds(run)
    steps_left = max(int((deadline - now) / max(per_step, 1e-9)), 0)
    last_step = run.scheduler.last_epoch + 1 + steps_left  # the step about to be taken counts
    for schedule in schedule_of(run.scheduler):
        if last_step < schedule.total_steps:
            schedule.set_total_steps(last_step)


def choose_amp_dtype(amp: bool, device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; None off CUDA or with amp off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
