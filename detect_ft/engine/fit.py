"""``fit(run, hooks)``: the epoch loop, as a few phases with hooks around them.

    for each epoch from run.state.epoch to run.epochs:
        prepare_epoch   freeze or unfreeze the backbone (and rebuild the DDP wrapper on a change)
        hooks.before_epoch
        train_epoch     one pass of train_one_epoch, hooks.before_step/after_step around each batch;
                        stop if the weights became nan/inf
        validate        rank 0, on the epochs eval_interval picks; best/stale bookkeeping in run.state
        hooks.after_epoch, then stop when a hook set run.stop_reason (agreed over ranks)

:class:`Run` holds what trains and what the phases leave for the hooks. It takes plain values and
callables, never the Config: :func:`detect_ft.engine.trainer.train` builds it from the config.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn as nn

from detect_ft.checkpoint.training import rng_state
from detect_ft.engine import distributed as dist_utils
from detect_ft.engine.ema import ModelEMA, unwrap
from detect_ft.engine.loop import train_one_epoch
from detect_ft.engine.state import RunState
from detect_ft.utils.errors import DetectFTError

if TYPE_CHECKING:
    from detect_ft.engine.budget import TimeBudget
    from detect_ft.engine.hooks import Hook

NO_BOXES = "no boxes to score: the validation split has no countable ground-truth boxes"


class WeightsDiverged(DetectFTError):
    """The model or EMA weights became non-finite (nan/inf): the run stops before validating or saving them."""


@dataclass
class LoopOptions:
    """How :func:`~detect_ft.engine.loop.train_one_epoch` trains (see its arguments)."""

    amp_dtype: Optional[torch.dtype] = None
    accumulate: int = 1
    clip_grad_norm: Optional[float] = None
    max_iters: Optional[int] = None
    max_nonfinite: int = 10
    progress: bool = True
    deadline: Optional[float] = None  # time.perf_counter() after which an epoch takes no more batches
    ends_at: Optional[float] = None  # when the run's time budget ends (the progress bar shows what is left)
    step_seconds: Optional[float] = None  # the budget's estimate of one optimizer step (see train_one_epoch)


@dataclass
class Run:
    """One training run as :func:`fit` drives it. Hooks read its attributes and may change them (a
    test's hook can replace ``evaluate``; any hook can set ``stop_reason``).

    Attributes:
        model: the detector being trained, not wrapped, on ``device``.
        make_loader: ``epoch -> loader`` of that epoch's ``(images, targets)`` batches.
        trainable: ``requires_grad`` of each parameter as built, restored after the frozen epochs.
        freeze_backbone_epochs: epochs at the start that train with the whole backbone frozen.
        evaluate: ``model -> metrics`` (``map``, ``map50``, ``map75``, ``seconds``, ...) on the
            validation split; None without one. ``eval_interval``: validate every that many epochs
            and after the last (0: never).
        best_metric: the metric (higher is better) that picks best.pt and that patience watches.
        state: what carries over epochs and into checkpoints (restored on resume).
        step: the current batch's 0-based index in the epoch (for ``before_step``/``after_step``).
        epoch, train_model, stats, row, improved, rng: the current epoch's 0-based index, the module
            that trains (``model`` or its DDP wrapper), train_one_epoch's stats, the metrics.jsonl row,
            whether ``best_metric`` improved, and every rank's RNG state for the checkpoint.
        stop_reason: set to end the run after this epoch; error: what ended it, if anything raised.
        budget: ``train.time_budget``'s :class:`~detect_ft.engine.budget.TimeBudget`, which changes
            ``epochs``, ``eval_interval``, ``freeze_backbone_epochs`` and the LR schedule's length after
            each epoch's training; None for a run of a fixed number of epochs.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    make_loader: Callable[[int], Iterable]
    device: torch.device
    info: dist_utils.DistInfo
    epochs: int
    model_name: str
    trainable: dict[str, bool]
    freeze_backbone_epochs: int = 0
    scaler: Optional[torch.amp.GradScaler] = None
    ema: Optional[ModelEMA] = None
    options: LoopOptions = field(default_factory=LoopOptions)
    evaluate: Optional[Callable[[nn.Module], dict[str, Any]]] = None
    eval_interval: int = 1
    best_metric: str = "map"
    state: RunState = field(default_factory=RunState)
    epoch: int = 0
    step: int = 0
    train_model: Optional[nn.Module] = None
    frozen: Optional[bool] = None
    stats: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    improved: bool = False
    rng: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: Optional[str] = None
    error: Optional[BaseException] = None
    budget: Optional[TimeBudget] = None

    def training_objects(self) -> dict[str, Any]:
        """What a checkpoint saves and a resume restores besides ``state`` and the RNG, by the keyword
        names of :func:`~detect_ft.checkpoint.training.save_checkpoint` and ``restore_training_state``."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "ema": self.ema,
        }

    def validates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) ends with a validation."""
        last = epoch + 1 == self.epochs
        return self.evaluate is not None and self.eval_interval > 0 and ((epoch + 1) % self.eval_interval == 0 or last)


def fit(run: Run, hooks: Sequence[Hook] = ()) -> RunState:
    """Train ``run`` from ``run.state.epoch`` up to ``run.epochs`` epochs (or an early stop); the final state.

    Every rank runs this; rank 0 alone validates. ``hooks`` are called in order at each point.

    Raises:
        DetectFTError: ``max_nonfinite`` non-finite losses in a row, or non-finite weights
            (:class:`WeightsDiverged`).
    """
    try:
        _call(hooks, "before_train", run)
        while run.state.epoch < run.epochs:  # a time budget may move run.epochs after each epoch
            run.epoch = run.state.epoch
            prepare_epoch(run)
            _call(hooks, "before_epoch", run)
            train_epoch(run, hooks)
            validate(run)
            if run.budget is not None:
                run.state.budget = run.budget.state(run)
            run.rng = dist_utils.gather_objects(rng_state())
            _call(hooks, "after_epoch", run)
            # rank 0 decides (it alone validated), so every rank stops alike
            run.stop_reason = dist_utils.broadcast_object(run.stop_reason)
            if run.stop_reason:
                break
    except BaseException as exc:
        run.error = exc
        raise
    finally:
        _call(hooks, "after_train", run)
    return run.state


def _call(hooks: Sequence[Hook], point: str, run: Run) -> None:
    for hook in hooks:
        getattr(hook, point)(run)


@contextlib.contextmanager
def _around_step(hooks: Sequence[Hook], run: Run, step: int) -> Iterator[None]:
    """The hooks' ``before_step`` and ``after_step`` around batch ``step`` (not ``after_step`` when it raised)."""
    run.step = step
    _call(hooks, "before_step", run)
    yield
    _call(hooks, "after_step", run)


def prepare_epoch(run: Run) -> None:
    """Freeze the backbone for the first ``freeze_backbone_epochs`` epochs, and give it back after."""
    frozen = run.epoch < run.freeze_backbone_epochs
    if frozen == run.frozen:
        return
    from detect_ft.models import set_trainable_backbone_layers

    if frozen:
        set_trainable_backbone_layers(run.model, run.model_name, 0)
    else:  # back to what build_model chose (model.trainable_backbone_layers or its default)
        for name, parameter in run.model.named_parameters():
            parameter.requires_grad_(run.trainable.get(name, True))
    # DDP records which parameters need gradients when it is built, so rebuild it on a change.
    run.train_model, run.frozen = _wrap(run.model, run.info, run.device), frozen


def _wrap(model: nn.Module, info: dist_utils.DistInfo, device: torch.device) -> nn.Module:
    if not info.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def train_epoch(run: Run, hooks: Sequence[Hook] = ()) -> None:
    """One pass over the epoch's loader, ``hooks``' step points around each batch; ``run.stats``,
    ``run.row`` and ``run.state`` updated.

    Raises:
        WeightsDiverged: the weights became non-finite (the row is still logged, nothing is saved).
    """
    o = run.options
    started = time.perf_counter()
    if run.budget is not None:
        run.budget.before_epoch()
        o.deadline, o.ends_at = run.budget.training_deadline(run), run.budget.ends_at
        o.step_seconds = run.budget.step_seconds(run)
    loader = run.make_loader(run.epoch)
    run.stats = train_one_epoch(
        run.train_model,
        run.optimizer,
        loader,
        run.device,
        epoch=run.epoch,
        scheduler=run.scheduler,
        scaler=run.scaler,
        amp_dtype=o.amp_dtype,
        accumulate=o.accumulate,
        clip_grad_norm=o.clip_grad_norm,
        ema=run.ema,
        max_iters=o.max_iters,
        max_nonfinite=o.max_nonfinite,
        nonfinite_run=run.state.nonfinite_run,
        progress=o.progress and run.info.is_main,
        around_batch=functools.partial(_around_step, hooks, run) if hooks else None,
        deadline=o.deadline,
        ends_at=o.ends_at,
        step_seconds=o.step_seconds,
    )
    del loader  # shuts its workers down before validation starts its own threads
    dist_utils.broadcast_buffers(run.model)
    keys = ("iterations", "loss", "losses", "lr", "img_s", "time", "skipped_steps")
    run.row = {"epoch": run.epoch + 1, **{k: run.stats[k] for k in keys}}
    # every rank checks (DDP keeps their weights equal), so every rank stops alike
    check_finite_weights(run.model, run.ema, run.epoch, run.epochs)
    run.state.finish_epoch(run.stats["steps"], run.stats["nonfinite_run"])
    if run.budget is not None:
        run.budget.after_training(run, time.perf_counter() - started)


def check_finite_weights(model: nn.Module, ema: Optional[ModelEMA], epoch: int, epochs: int) -> None:
    """Raise :class:`WeightsDiverged` when a floating-point tensor of the model or its EMA is nan/inf.

    Nothing of epoch ``epoch`` (0-based) is saved: last.pt keeps the epoch before it, if there was one.
    """
    modules = [("model", unwrap(model))] + ([("EMA", ema.module)] if ema is not None else [])
    for what, module in modules:
        bad = [
            name
            for name, value in module.state_dict().items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if bad:
            kept = (
                f"checkpoints/last.pt keeps epoch {epoch}, the last finite one (best.pt, if any, an epoch before it)"
                if epoch
                else "no checkpoint was written (it was the first epoch)"
            )
            raise WeightsDiverged(
                f"training stopped: the {what} weights became non-finite (nan/inf) in epoch {epoch + 1}/{epochs} "
                f"({len(bad)} tensors, e.g. {bad[0]}); {kept}; lower train.lr, add warmup (train.warmup_iters) "
                "or set train.clip_grad_norm"
            )


def validate(run: Run) -> None:
    """On rank 0 and a validating epoch: evaluate (the EMA model when there is one), put ``map``,
    ``map50``, ``map75`` and ``val_time`` in the row, and record the chosen metric in ``run.state``."""
    run.improved = False
    if not (run.info.is_main and run.validates(run.epoch)):
        if run.budget is not None:
            run.budget.after_validation(None)
        return
    metrics = run.evaluate(run.ema.module if run.ema else unwrap(run.model))
    run.state.metrics = metrics
    run.row.update({k: metrics[k] for k in ("map", "map50", "map75")}, val_time=metrics["seconds"])
    value = metrics[run.best_metric]
    if value is None:  # a split without countable boxes defines no AP: nothing to pick best.pt by
        run.row["note"] = NO_BOXES
    else:
        run.improved = run.state.record(value)
    if run.budget is not None:
        run.budget.after_validation(metrics["seconds"])
