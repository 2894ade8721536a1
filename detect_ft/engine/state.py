"""``RunState``: what a training run carries from epoch to epoch and saves in every checkpoint.

    state = RunState.from_checkpoint(checkpoint)   # resume; RunState() for a new run
    improved = state.record(0.41)                  # a validation's value of train.best_metric
    save_checkpoint(path, ..., **state.checkpoint_entries())

Its counters go to the checkpoint's ``epoch`` and ``iteration`` entries, the last validation's metrics to
``metrics`` and the bookkeeping to the plain-dict ``trainer`` entry (``best_value``, ``best_epoch``,
``stale``, ``nonfinite_run``, ``budget``), the layout every detect-ft version has written, so older checkpoints
resume too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from detect_ft.checkpoint import format as ckpt


@dataclass
class RunState:
    """The state of a run after ``epoch`` completed epochs.

    Attributes:
        epoch: completed epochs; iteration: optimizer steps done.
        best_value, best_epoch: the best validation value of the chosen metric and the (1-based) epoch
            that reached it; None before a validation with countable boxes.
        stale: validations since the best one (what ``train.patience`` counts).
        nonfinite_run: non-finite losses in a row at the end of the last epoch (carried into the next).
        metrics: the last validation's metrics (``map``, ``map50``, ...), empty before one.
        budget: a time-budgeted run's :meth:`~detect_ft.engine.budget.TimeBudget.state` (seconds used,
            costs, planned epochs), empty without ``train.time_budget``.
    """

    epoch: int = 0
    iteration: int = 0
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    stale: int = 0
    nonfinite_run: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)

    def finish_epoch(self, steps: int, nonfinite_run: int) -> None:
        """Count an epoch of ``steps`` optimizer steps that ended with ``nonfinite_run`` bad losses in a row."""
        self.epoch += 1
        self.iteration += steps
        self.nonfinite_run = nonfinite_run

    def record(self, value: float) -> bool:
        """Take a validation's value of the chosen metric (higher is better); True when it is a new best."""
        improved = self.best_value is None or value > self.best_value
        if improved:
            self.best_value, self.best_epoch, self.stale = value, self.epoch, 0
        else:
            self.stale += 1
        return improved

    def trainer_entry(self) -> dict[str, Any]:
        """The checkpoint's ``trainer`` entry."""
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "nonfinite_run": self.nonfinite_run,
            **({"budget": self.budget} if self.budget else {}),  # time-budgeted runs only
        }

    def checkpoint_entries(self) -> dict[str, Any]:
        """``epoch``, ``iteration``, ``metrics`` and ``trainer``: the keyword arguments of
        :func:`detect_ft.checkpoint.training.save_checkpoint` that this state fills."""
        return {
            "epoch": self.epoch,
            "iteration": self.iteration,
            "metrics": self.metrics,
            "trainer": self.trainer_entry(),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> RunState:
        """The state a checkpoint was saved with (a checkpoint without a ``trainer`` entry: no best yet).

        Raises:
            TypeError, ValueError: an entry of the wrong type (the trainer reports the file).
        """
        entry = checkpoint.get(ckpt.TRAINER) or {}
        best_value, best_epoch = entry.get("best_value"), entry.get("best_epoch")
        return cls(
            epoch=int(checkpoint[ckpt.EPOCH]),
            iteration=int(checkpoint[ckpt.ITERATION]),
            best_value=None if best_value is None else float(best_value),
            best_epoch=None if best_epoch is None else int(best_epoch),
            stale=int(entry.get("stale", 0)),
            nonfinite_run=int(entry.get("nonfinite_run", 0)),
            budget=dict(entry.get("budget") or {}),
            metrics=dict(checkpoint.get(ckpt.METRICS) or {}),
        )
