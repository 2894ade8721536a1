"""Optimizer and learning-rate schedule.

    optimizer = build_optimizer(model, "ssdlite320_mobilenet_v3_large", optimizer="sgd", lr=0.01,
                                momentum=0.9, nesterov=False, weight_decay=1e-4, backbone_lr_mult=0.1)
    scheduler = build_scheduler(optimizer, scheduler="cosine", total_steps=1200, steps_per_epoch=100,
                                warmup_iters=100, milestones=[], gamma=0.1)
    ...  # scheduler.step() after every optimizer step

The schedule is a per-optimizer-step ``LambdaLR``: a factor multiplying every group's own starting LR, so
the backbone LR multiplier of :func:`detect_ft.models.parameter_groups` holds throughout.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from detect_ft.models import parameter_groups

# The LR at the first warmup step is this fraction of the base LR (torchvision's detection references).
WARMUP_START_FACTOR = 0.001


def build_optimizer(
    model: nn.Module,
    model_name: str,
    *,
    optimizer: str,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 1e-4,
    backbone_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """SGD or AdamW over ``parameter_groups``: no weight decay on norms and biases, backbone LR x mult.

    Every parameter is in a group, frozen ones too, so unfreezing the backbone later needs no new
    optimizer (parameters without a gradient are skipped by ``step``). ``momentum`` is AdamW's beta1.
    """
    groups = parameter_groups(model, model_name, lr=lr, weight_decay=weight_decay, backbone_lr_mult=backbone_lr_mult)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {optimizer!r}; use sgd or adamw")


class LRSchedule:
    """``step -> factor`` of the base LR: linear warmup, then ``cosine`` | ``multistep`` | ``constant``.

    ``step`` counts optimizer steps from 0. Cosine decays from 1 at the end of warmup to 0 at
    ``total_steps``; multistep multiplies by ``gamma`` at each milestone (optimizer steps). Warmup
    multiplies the schedule's own factor, so a milestone inside the warmup still counts.

    An object rather than a closure, so that a time budget (``train.time_budget``) can move the end of
    the schedule after each epoch (:meth:`set_total_steps`).
    """

    def __init__(
        self, scheduler: str, *, total_steps: int, warmup_iters: int, boundaries: list[int], gamma: float
    ) -> None:
        self.scheduler = scheduler
        self.total_steps = max(int(total_steps), 1)
        self.warmup_iters = int(warmup_iters)
        self.boundaries = sorted(int(b) for b in boundaries)
        self.gamma = float(gamma)

    def set_total_steps(self, total_steps: int, warmup_iters: int | None = None) -> None:
        """Move the end of the schedule (cosine reaches 0 there); the warmup stays unless given."""
        self.total_steps = max(int(total_steps), 1)
        if warmup_iters is not None:
            self.warmup_iters = int(warmup_iters)

    def __call__(self, step: int) -> float:
        if self.scheduler == "cosine":
            span = max(self.total_steps - self.warmup_iters, 1)
            progress = min(max(step - self.warmup_iters, 0) / span, 1.0)
            value = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.scheduler == "multistep":
            value = self.gamma ** sum(step >= b for b in self.boundaries)
        else:
            value = 1.0
        if step < self.warmup_iters:
            alpha = step / self.warmup_iters
            value *= WARMUP_START_FACTOR * (1 - alpha) + alpha
        return value


def lr_factor(
    scheduler: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_iters: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> LRSchedule:
    """The :class:`LRSchedule` of a run of ``total_steps`` optimizer steps; ``milestones`` are epochs of
    ``steps_per_epoch`` steps (``scheduler=multistep``)."""
    if scheduler not in ("cosine", "multistep", "constant"):
        raise ValueError(f"unknown scheduler {scheduler!r}; use cosine, multistep or constant")
    steps_per_epoch = max(int(steps_per_epoch), 1)
    return LRSchedule(
        scheduler,
        total_steps=total_steps,
        warmup_iters=warmup_iters,
        boundaries=[int(m) * steps_per_epoch for m in milestones],
        gamma=gamma,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: str,
    total_steps: int,
    steps_per_epoch: int,
    warmup_iters: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :func:`lr_factor`; call ``step()`` once per optimizer step."""
    factor = lr_factor(
        scheduler,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        warmup_iters=warmup_iters,
        milestones=milestones,
        gamma=gamma,
    )
    # LambdaLR saves the attributes of a callable object but not of a plain function: wrapped, the schedule
    # a resumed run follows is the one its config (or its time budget's saved plan) gives, not the old one.
    step_factor = lambda step: factor(step)
    step_factor.schedule = factor  # what a time budget re-plans (see schedule_of)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, step_factor)


def schedule_of(scheduler: torch.optim.lr_scheduler.LRScheduler) -> list[LRSchedule]:
    """The :class:`LRSchedule` behind a scheduler from :func:`build_scheduler` (one shared by every group)."""
    lambdas = getattr(scheduler, "lr_lambdas", [])
    return list(
        {id(f.schedule): f.schedule for f in lambdas if isinstance(getattr(f, "schedule", None), LRSchedule)}.values()
    )


# Warm-up is a small share of the run, so a short CPU run leaves it after a few steps and a long GPU run
# after torchvision's 1000 (a fixed 100 steps was longer than a whole 70-step run, whose LR then never
# left warm-up).
AUTO_WARMUP_SHARE = 0.05
AUTO_WARMUP_MAX = 1000
MAX_WARMUP_SHARE = 0.25


def resolve_warmup_iters(warmup_iters: int | None, total_steps: int) -> tuple[int, str | None]:
    """Warm-up steps for a run of ``total_steps`` optimizer steps, and a note when it was changed.

    ``None`` gives ``AUTO_WARMUP_SHARE`` of the run (at least 1 step, at most ``AUTO_WARMUP_MAX``); an
    explicit value longer than ``MAX_WARMUP_SHARE`` of the run is shortened to that, and said.
    """
    total_steps = max(int(total_steps), 1)
    if warmup_iters is None:
        return min(AUTO_WARMUP_MAX, max(1, round(AUTO_WARMUP_SHARE * total_steps))), None
    cap = max(1, int(MAX_WARMUP_SHARE * total_steps))
    if warmup_iters > cap:
        return cap, (
            f"train.warmup_iters={warmup_iters} is over {MAX_WARMUP_SHARE:.0%} of this run's {total_steps} "
            f"optimizer steps; warming up for {cap} steps instead"
        )
    return warmup_iters, None


def optimizer_steps_per_epoch(iters_per_epoch: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of ``iters_per_epoch`` batches: the last partial accumulation steps too."""
    return math.ceil(iters_per_epoch / max(accumulate, 1))
