"""The engine hook that makes a training run an Optuna trial: it reports every validation and stops the run
when the study's pruner says the trial is not worth finishing."""

from __future__ import annotations

import logging
from typing import Any, Optional

from detect_ft.engine.hooks import Hook
from detect_ft.engine.run import Run

LOG = logging.getLogger(__name__)


class PruningHook(Hook):
    """After each epoch that validated, ``trial.report(run.row[metric], step=epoch)`` (1-based epoch); when
    ``trial.should_prune()``, sets ``run.stop_reason`` so the run ends after this epoch, with its checkpoints
    and metrics written as for any early stop.

    ``started`` says whether training began (errors before it are the config's or data's, not the trial's);
    ``pruned`` whether this hook stopped the run, and ``pruned_at`` the epoch it did.
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.started = False
        self.pruned = False
        self.pruned_at: Optional[int] = None

    def before_train(self, run: Run) -> None:
        self.started = True

    def after_epoch(self, run: Run) -> None:
        value = run.row.get(self.metric)
        if value is None:  # no validation this epoch
            return
        epoch = int(run.row["epoch"])
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned, self.pruned_at = True, epoch
            run.stop_reason = (
                f"trial {self.trial.number} pruned at epoch {epoch} ({self.metric}={value:.4f}): "
                "the study's pruner found it behind the earlier trials"
            )
