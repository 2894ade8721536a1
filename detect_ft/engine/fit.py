"""``fit(run, hooks)``: the training path, three calls deep: fit -> train_one_epoch -> run_step.

    for each epoch from run.state.epoch to run.epochs:                       fit
        prepare_epoch       freeze or unfreeze the backbone (and rebuild the DDP wrapper on a change)
        hooks.before_epoch
        train_one_epoch     one pass over the epoch's loader, hooks.before_step/after_step around each
                            batch's run_step: forward, backward and, ending an accumulation window, the
                            optimizer step, the LR step and the EMA update
        end_training        the metrics row; stop if the weights became nan/inf; a time budget re-plans
        validate            rank 0, on the epochs eval_interval picks; best/stale bookkeeping in run.state
        hooks.after_epoch, then stop when a hook set run.stop_reason (agreed over ranks)

The :class:`~detect_ft.engine.run.Run` holds what trains and its :class:`~detect_ft.engine.run.TrainOptions`;
it takes plain values and callables, never the Config: :func:`detect_ft.engine.trainer.train` builds it.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import torch
import torch.nn as nn

from detect_ft.checkpoint.training import rng_state
from detect_ft.engine import distributed as dist_utils
from detect_ft.engine.distributed import is_distributed, unwrap
from detect_ft.engine.run import Run
from detect_ft.engine.state import RunState
from detect_ft.engine.steps import EpochTally, fit_schedule_to_deadline, forward_backward
from detect_ft.utils.errors import DetectFTError

if TYPE_CHECKING:
    from timm.utils.model_ema import ModelEmaV3

    from detect_ft.engine.hooks import Hook

NO_BOXES = "no boxes to score: the validation split has no countable ground-truth boxes"
ROW_KEYS = ("iterations", "loss", "losses", "lr", "img_s", "time", "skipped_steps")


class WeightsDiverged(DetectFTError):
    """The model or EMA weights became non-finite (nan/inf): the run stops before validating or saving them."""


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
            started = time.perf_counter()
            # Only the call holds the loader: its workers end before validation starts its own threads.
            run.stats = train_one_epoch(run, run.make_loader(run.epoch), hooks)
            end_training(run, started)
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


def train_one_epoch(run: Run, loader: Iterable, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train ``run`` for one pass over ``loader`` (at most ``run.options.max_iters`` batches, none after a
    time budget's deadline): :func:`run_step` on each batch, the hooks' ``before_step`` and ``after_step``
    around it (not ``after_step`` when it raised). ``run.state`` counts the epoch and its steps.

    Args:
        loader: yields ``(images, targets)``: a list of (3, H, W) float tensors in [0, 1] and a list of
            dicts with ``boxes`` (N, 4) float xyxy absolute pixels and ``labels`` (N,) int64 in 1..K.

    Returns:
        ``iterations``, ``steps`` (optimizer steps), ``images``, ``time`` (s), ``img_s`` (summed over
        ranks), ``loss`` and ``losses`` (means over the finite batches of all ranks), ``lr`` (first
        group's LR at the end), ``skipped_steps`` (non-finite batches) and ``nonfinite_run``.
    """
    from tqdm import tqdm

    o, budget = run.options, run.budget
    deadline = None
    if budget is not None:
        budget.before_epoch()
        deadline = budget.training_deadline(run)
    tally = EpochTally(nonfinite_run=run.state.nonfinite_run)
    total = len(loader) if hasattr(loader, "__len__") else None
    num_iters = min(total, o.max_iters) if (total is not None and o.max_iters) else (o.max_iters or total)
    shown = o.progress and run.info.is_main
    bar = tqdm(total=num_iters, desc=f"epoch {run.epoch + 1}", unit="it", disable=not shown, dynamic_ncols=True)
    (run.train_model or run.model).train()
    run.optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    # islice stops before fetching a batch past the cap (a plain break would load one more).
    batches = itertools.islice(loader, num_iters) if num_iters is not None else loader
    with contextlib.closing(bar):
        for i, (images, targets) in enumerate(batches):
            run.step = i
            _call(hooks, "before_step", run)
            run_step(run, images, targets, tally, (i + 1) % max(o.accumulate, 1) == 0 or i + 1 == num_iters)
            _call(hooks, "after_step", run)
            now = time.perf_counter()
            if shown:
                ends_at = budget.ends_at if budget is not None else None
                bar.set_postfix(tally.postfix(run.optimizer, now - start, ends_at), refresh=False)
            tally.iterations += 1
            bar.update(1)
            if deadline is not None and now > deadline:
                break  # the time budget ran out mid-epoch: the run validates and ends after it
        seconds = time.perf_counter() - start
    stats = tally.stats(run.optimizer, seconds, run.device)
    dist_utils.broadcast_buffers(run.model)
    run.state.finish_epoch(stats["steps"], stats["nonfinite_run"])
    return stats


def run_step(run: Run, images: list[torch.Tensor], targets: list[dict], tally: EpochTally, ends_window: bool) -> None:
    """Forward and backward one batch (see :func:`~detect_ft.engine.steps.forward_backward`); when it ends
    an accumulation window, the optimizer step (gradients clipped to ``clip_grad_norm``, fp16 ones
    unscaled first), then the LR schedule's step and the EMA's update.

    Raises:
        DetectFTError: the loss was non-finite for ``max_nonfinite`` batches in a row.
    """
    o, model, optimizer = run.options, run.train_model or run.model, run.optimizer
    scaler = run.scaler if run.scaler is not None and run.scaler.is_enabled() else None
    # Without a step coming, DDP must not all-reduce gradients that are still accumulating.
    sync = contextlib.nullcontext() if (ends_window or not is_distributed()) else model.no_sync()
    with sync:
        losses = forward_backward(model, images, targets, run.device, o.amp_dtype, max(o.accumulate, 1), scaler)
    tally.add(losses, len(images))
    if losses is None and tally.nonfinite_run >= o.max_nonfinite:
        raise DetectFTError(
            f"training stopped: the loss was not finite (nan/inf) for {tally.nonfinite_run} batches in a row "
            f"(epoch {run.epoch + 1}, batch {run.step + 1}; train.max_nonfinite={o.max_nonfinite}); lower "
            "train.lr, add warmup (train.warmup_iters), set train.clip_grad_norm, or check the boxes with "
            "detect-ft check-data"
        )
    if not ends_window:
        return
    if o.clip_grad_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, o.clip_grad_norm)
    stepped = True
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale  # update() lowers the scale exactly when step() was skipped
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    # A GradScaler skips the step when the fp16 gradients overflowed (the first steps of most fp16
    # runs); the schedule and the EMA then wait too, or warm-up would be spent on skipped steps.
    if not stepped:
        return
    tally.steps += 1
    if run.scheduler is not None:
        fit_schedule_to_deadline(run, tally)
        run.scheduler.step()
    if run.ema is not None:  # its decay warms up over the run's optimizer steps (docs/training.md, EMA)
        run.ema.update(unwrap(model), step=run.state.iteration + tally.steps)


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


def end_training(run: Run, started: float) -> None:
    """After an epoch's training (begun at ``started``, ``time.perf_counter()``): its ``run.row``; a time
    budget's new plan.

    Raises:
        WeightsDiverged: the weights became non-finite (the row is still logged, nothing is saved).
    """
    run.row = {"epoch": run.epoch + 1, **{k: run.stats[k] for k in ROW_KEYS}}
    # every rank checks (DDP keeps their weights equal), so every rank stops alike
    check_finite_weights(run.model, run.ema, run.epoch, run.epochs)
    if run.budget is not None:
        run.budget.after_training(run, time.perf_counter() - started)


def check_finite_weights(model: nn.Module, ema: Optional[ModelEmaV3], epoch: int, epochs: int) -> None:
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
