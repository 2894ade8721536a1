"""Training to a wall-clock budget (``train.time_budget``): how many epochs fit, planned before the first
step and planned again after every epoch's training.

    costs = measure_costs(run, val_images=40, freezes=True)      # every rank; rank 0's figures count
    run.budget = TimeBudget(600, ends_at=started + 600, schedule=RunLength(...), steps_per_epoch=10)
    run.budget.start(run, costs)   # run.epochs, its LR schedule, frozen epochs and validations fit 600 s
    ...                            # fit() calls run.budget.after_training(run, seconds) after each epoch

Costs are seconds: a training epoch with the backbone frozen and one with it training (loader start-up
and the hooks' writing included), and one validation. Before the first step they come from
:func:`measure_costs` (a few forward/backward passes whose effects are undone); after that each phase's
measured epochs replace its estimate (the median of the last three), so a machine that turns slower or faster moves the end of
the schedule, and the cosine decay still ends at the last epoch. A plan never drops the epoch that just
trained; when even one epoch would not fit, that epoch is cut to the iterations that do.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

import torch

from detect_ft.checkpoint.training import rng_state, set_rng_state
from detect_ft.engine import distributed as dist_utils
from detect_ft.engine.optim import resolve_warmup_iters, schedule_of

if TYPE_CHECKING:
    from detect_ft.engine.run import Run

# Seconds a validation costs besides its forward passes (loader start-up, scoring, plots): a first guess,
# replaced by the first measured validation.
VALIDATION_OVERHEAD_S = 1.0
CALIBRATION_BATCHES = 2  # timed forward/backward passes per phase, after one untimed warm-up pass
MAX_EPOCHS = 100_000
PLAN_MARGIN_EPOCHS = 0.5  # epochs of time a re-plan keeps in hand
MEASURED_EPOCHS = 3  # a phase's epoch cost is the median of its last this many epochs


def eval_interval(interval: Optional[int], epochs: int) -> int:
    """Epochs between validations: as given, or (None) about ten validations a run, the last epoch always."""
    return max(1, round(epochs / 10)) if interval is None else interval


def frozen_epochs(explicit: int, fraction: float, epochs: int) -> int:
    """Epochs trained with the backbone frozen: ``explicit`` when set, else ``fraction`` of ``epochs``."""
    return min(explicit, epochs) if explicit else int(round(fraction * epochs))


@dataclass
class Costs:
    """Seconds of one training epoch with the backbone frozen (``frozen``) and training (``training``),
    and of one validation."""

    frozen: float
    training: float
    validation: float


@dataclass
class RunLength:
    """What depends on the number of epochs: the frozen epochs and the validating epochs."""

    freeze_epochs: int = 0
    freeze_fraction: float = 0.0
    interval: Optional[int] = None  # train.eval_interval; None: about ten validations a run
    validates: bool = True  # there is a validation split

    def frozen(self, epochs: int) -> int:
        return frozen_epochs(self.freeze_epochs, self.freeze_fraction, epochs)

    def validations(self, start: int, epochs: int) -> int:
        """Validating epochs (0-based) in ``start..epochs-1`` of a run of ``epochs`` epochs."""
        every = eval_interval(self.interval, epochs)
        if not self.validates or every == 0 or start >= epochs:
            return 0
        return epochs // every - start // every + (1 if epochs % every else 0)


def remaining_cost(epochs: int, *, trained: int, validated_from: int, costs: Costs, length: RunLength) -> float:
    """Seconds still to spend for a run of ``epochs`` epochs of which ``trained`` have trained and whose
    validations from epoch ``validated_from`` (0-based) on are still to run."""
    left = max(epochs - trained, 0)
    frozen_left = min(max(length.frozen(epochs) - trained, 0), left)
    spent = frozen_left * costs.frozen + (left - frozen_left) * costs.training
    return spent + length.validations(validated_from, epochs) * costs.validation


def plan_epochs(remaining: float, *, trained: int, validated_from: int, costs: Costs, length: RunLength) -> int:
    """The most epochs whose remaining cost fits ``remaining`` seconds; never fewer than ``trained`` (nor
    than 1): when nothing more fits, the run ends after the epoch that has trained."""
    floor = max(trained, 1)
    unit = max(min(costs.frozen, costs.training), 1e-6)
    ceiling = min(MAX_EPOCHS, trained + int(max(remaining, 0.0) / unit) + 1)
    best = floor
    for epochs in range(floor, ceiling + 1):  # the count of validations is not monotonic in epochs
        if remaining_cost(epochs, trained=trained, validated_from=validated_from, costs=costs, length=length) <= (
            remaining
        ):
            best = epochs
    return best


class TimeBudget:
    """A run's time budget: ends at ``ends_at`` (``time.perf_counter()`` seconds) and keeps ``run.epochs``,
    the LR schedule's length, the frozen epochs and the validation interval fitted to it."""

    def __init__(
        self,
        seconds: float,
        *,
        ends_at: float,
        length: RunLength,
        steps_per_epoch: int,
        warmup_iters: Optional[int] = None,
        costs: Optional[Costs] = None,
    ) -> None:
        self.seconds, self.ends_at, self.length, self.warmup_iters = seconds, ends_at, length, warmup_iters
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.costs = costs
        self.overhead = 0.0  # seconds an epoch spends outside training and validation (hooks, checkpoints)
        self.measured: dict[str, list[float]] = {"frozen": [], "training": []}
        self._epoch_end: Optional[float] = None

    def remaining(self) -> float:
        return self.ends_at - time.perf_counter()

    @classmethod
    def for_run(
        cls,
        run: Run,
        seconds: float,
        *,
        started: float,
        length: RunLength,
        steps_per_epoch: int,
        warmup_iters: Optional[int],
        val_images: int,
    ) -> TimeBudget:
        """The budget of ``run``, fitted to it: a new run measures its speed (:func:`measure_costs`) and
        plans; a resumed one (``run.state.budget`` set) continues its saved plan with what is left."""
        if run.state.budget:
            saved = {**run.state.budget, "seconds": seconds}
            return cls.resume(run, saved, started=started, length=length, steps_per_epoch=steps_per_epoch)
        budget = cls(
            seconds,
            ends_at=started + seconds,
            length=length,
            steps_per_epoch=steps_per_epoch,
            warmup_iters=warmup_iters,
        )
        budget.start(run, measure_costs(run, val_images=val_images, freezes=bool(length.frozen(MAX_EPOCHS))))
        return budget

    def start(self, run: Run, costs: Costs) -> None:
        """The first plan, from measured ``costs``: set the run's length and its warmup (``train.warmup_iters``
        or a share of the planned steps); cut the one epoch to the iterations that fit when even a whole
        epoch does not."""
        self.costs = costs
        remaining, done = self.remaining(), run.state.epoch
        epochs = plan_epochs(remaining, trained=done, validated_from=done, costs=costs, length=self.length)
        if epochs == 1:
            whole = remaining_cost(1, trained=0, validated_from=0, costs=costs, length=self.length)
            if whole > remaining:
                per_step = costs.training / self.steps_per_epoch
                steps = max(1, int((remaining - (whole - costs.training)) / per_step))
                if steps < self.steps_per_epoch:
                    run.options.max_iters = steps * max(run.options.accumulate, 1)
                    self.steps_per_epoch = steps
        self.apply(run, epochs)
        warmup, _ = resolve_warmup_iters(self.warmup_iters, epochs * self.steps_per_epoch)
        for schedule in schedule_of(run.scheduler):
            schedule.set_total_steps(epochs * self.steps_per_epoch, warmup)

    def after_training(self, run: Run, seconds: float) -> None:
        """Take the epoch's measured training ``seconds`` and plan the epochs that still fit (rank 0
        decides, every rank applies)."""
        now = time.perf_counter()
        phase, other = ("frozen", "training") if run.frozen else ("training", "frozen")
        # the median of the phase's last few epochs: one epoch slowed by another program moves the plan little
        self.measured[phase] = (self.measured[phase] + [seconds + self.overhead])[-MEASURED_EPOCHS:]
        estimate, measured = getattr(self.costs, phase), statistics.median(self.measured[phase])
        setattr(self.costs, phase, measured)
        if not self.measured[other]:  # the phase still to come was only estimated: off by the same factor
            setattr(self.costs, other, getattr(self.costs, other) * measured / max(estimate, 1e-9))
        epochs = None
        if run.info.is_main:
            # Half an epoch kept in hand: a plan that must later end the run early leaves its LR above the
            # schedule's end value, one that ends a little before the budget does not.
            margin = PLAN_MARGIN_EPOCHS * max(self.costs.frozen, self.costs.training)
            epochs = plan_epochs(
                self.ends_at - now - margin,
                trained=run.state.epoch,
                validated_from=run.epoch,
                costs=self.costs,
                length=self.length,
            )
            if epochs == run.state.epoch and self._time_for_part_of_an_epoch(run, now):
                # Train it until the deadline, which also ends the LR schedule there (engine.steps), rather
                # than stop with the LR above its end value.
                epochs += 1
        self.apply(run, dist_utils.broadcast_object(epochs))

    def _time_for_part_of_an_epoch(self, run: Run, now: float) -> bool:
        """Whether a step still fits before the training deadline while the LR has not reached its end."""
        deadline = self.training_deadline(run)
        schedule = schedule_of(run.scheduler)
        unfinished = bool(schedule) and schedule[0].total_steps > run.scheduler.last_epoch
        return unfinished and deadline is not None and deadline - now > self.costs.training / self.steps_per_epoch

    def after_validation(self, seconds: Optional[float]) -> None:
        """Take a validation's measured seconds (None: the epoch did not validate)."""
        if seconds is not None:
            self.costs.validation = seconds
        self._epoch_end = time.perf_counter()

    def before_epoch(self) -> None:
        """Count what the last epoch spent after its validation (hooks, checkpoints) as per-epoch overhead."""
        if self._epoch_end is not None:
            self.overhead = time.perf_counter() - self._epoch_end

    def apply(self, run: Run, epochs: int) -> None:
        """Make ``run`` a run of ``epochs`` epochs: its schedule's end, frozen epochs and validation interval."""
        run.epochs = epochs
        run.eval_interval = eval_interval(self.length.interval, epochs)
        if run.frozen or run.state.epoch == 0:  # the frozen phase may still move; never re-freeze after it
            run.freeze_backbone_epochs = self.length.frozen(epochs)
        for schedule in schedule_of(run.scheduler):
            schedule.set_total_steps(epochs * self.steps_per_epoch)

    def state(self, run: Run) -> dict[str, Any]:
        """What a checkpoint keeps (plain values): the budget, the seconds used, the costs and the plan."""
        run_epochs, frozen, schedule = run.epochs, run.freeze_backbone_epochs, schedule_of(run.scheduler)
        used = self.seconds - (self.ends_at - time.perf_counter())
        return {
            "seconds": self.seconds,
            "used": used,
            "costs": asdict(self.costs),
            "overhead": self.overhead,
            "epochs": run_epochs,
            "frozen_epochs": frozen,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_iters": schedule[0].warmup_iters if schedule else 0,
            "max_iters": run.options.max_iters,
        }

    @classmethod
    def resume(
        cls, run: Run, saved: dict[str, Any], *, started: float, length: RunLength, steps_per_epoch: int
    ) -> TimeBudget:
        """The budget of a resumed ``run``: what is left of it from ``started``, and the saved costs and plan,
        which also set the LR schedule's length and warm-up again (a scheduler's state does not hold them)."""
        budget = cls(
            float(saved["seconds"]),
            ends_at=started + float(saved["seconds"]) - float(saved["used"]),
            length=length,
            steps_per_epoch=steps_per_epoch,
            costs=Costs(**{k: float(v) for k, v in saved["costs"].items()}),
        )
        budget.overhead = float(saved.get("overhead", 0.0))
        budget.steps_per_epoch = int(saved["steps_per_epoch"])
        if saved.get("max_iters"):
            run.options.max_iters = int(saved["max_iters"])
        run.epochs = int(saved["epochs"])
        run.eval_interval = eval_interval(length.interval, run.epochs)
        run.freeze_backbone_epochs = int(saved["frozen_epochs"])
        for schedule in schedule_of(run.scheduler):
            schedule.set_total_steps(run.epochs * budget.steps_per_epoch, int(saved["warmup_iters"]))
        return budget

    def training_deadline(self, run: Run) -> Optional[float]:
        """When the epoch's loop must stop taking batches so that the last validation still fits (None
        under DDP: ranks stop at epoch ends only, together)."""
        if run.info.distributed:
            return None
        return self.ends_at - self.costs.validation - self.overhead

    def step_seconds(self, run: Run) -> float:
        """The planned seconds of one optimizer step in the epoch ``run`` is about to train (frozen or not),
        its per-epoch overhead included, so a little long: the loop's pace until it has timed its own."""
        epoch = self.costs.frozen if run.frozen else self.costs.training
        return epoch / self.steps_per_epoch

    def describe(self, run: Run) -> str:
        """The banner line: the budget, the epochs that fit and the costs they were planned with."""
        c = self.costs
        frozen = (
            f", the first {run.freeze_backbone_epochs} with the backbone frozen" if run.freeze_backbone_epochs else ""
        )
        cut = f" of {run.options.max_iters} iterations" if run.options.max_iters and run.epochs == 1 else ""
        return (
            f"time budget {_duration(self.seconds)}: {run.epochs} epoch(s){cut} fit{frozen}, validating every "
            f"{run.eval_interval} (measured: an epoch {c.training:.1f}s, frozen {c.frozen:.1f}s, a validation "
            f"~{c.validation:.1f}s); planned again after each epoch"
        )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}m" if seconds >= 60 else f"{seconds:g}s"


def measure_costs(run: Run, *, val_images: int, freezes: bool) -> Costs:
    """Time a few forward/backward passes of the run's model on its first batches (and with the backbone
    frozen when the run ``freezes``) and an inference pass, then undo their effects: weights, BatchNorm
    statistics, gradients, ``requires_grad`` and every random generator are as before."""
    from detect_ft.engine.steps import forward_backward

    model = run.model
    saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_rng, saved_grad = rng_state(), {n: p.requires_grad for n, p in model.named_parameters()}
    loader = run.make_loader(0)
    iters = len(loader) if run.options.max_iters is None else min(len(loader), run.options.max_iters)
    try:
        start = time.perf_counter()
        batches = iter(loader)
        first = next(batches)
        startup = time.perf_counter() - start
        pool = itertools.chain(batches, itertools.repeat(first))

        def step(batch: Any) -> None:
            forward_backward(model, *batch, run.device, run.options.amp_dtype, 1, None)
            model.zero_grad(set_to_none=True)

        model.train()
        step(first)  # warm-up: allocations, kernels, cuDNN choices
        training = _timed(step, pool, run.device)
        frozen = training
        if freezes:
            from detect_ft.models import set_trainable_backbone_layers

            set_trainable_backbone_layers(model, run.model_name, 0)
            frozen = _timed(step, pool, run.device)
        per_image = _time_inference(model, first[0], run.device) / max(len(first[0]), 1)
    finally:
        model.load_state_dict(saved_state)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(saved_grad[name])
        model.zero_grad(set_to_none=True)
        model.train()
        set_rng_state(saved_rng)
        del loader
    validation = per_image * val_images + VALIDATION_OVERHEAD_S if val_images else 0.0
    costs = Costs(frozen=startup + frozen * iters, training=startup + training * iters, validation=validation)
    return Costs(**dist_utils.broadcast_object(asdict(costs)))


def _timed(step, batches: Iterator, device: torch.device) -> float:
    """Mean seconds of :data:`CALIBRATION_BATCHES` fetches and steps."""
    start = time.perf_counter()
    for batch in itertools.islice(batches, CALIBRATION_BATCHES):
        step(batch)
    _synchronize(device)
    return (time.perf_counter() - start) / CALIBRATION_BATCHES


def _time_inference(model: torch.nn.Module, images: list[torch.Tensor], device: torch.device) -> float:
    """Seconds of one inference pass over ``images``, after an untimed pass over the same batch: a GPU's
    first eval-mode call of a batch shape loads kernels and autotunes cuDNN for it, once; timed, it made an
    H200's 40-image validation look like 38-55 s, so a 1-minute budget planned one training step."""
    model.eval()
    with torch.no_grad():
        model([image.to(device) for image in images])
        _synchronize(device)
        start = time.perf_counter()
        model([image.to(device) for image in images])
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = [
    "Costs",
    "RunLength",
    "TimeBudget",
    "eval_interval",
    "frozen_epochs",
    "measure_costs",
    "plan_epochs",
    "remaining_cost",
]
