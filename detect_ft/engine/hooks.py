"""Hooks: what happens around the epochs of :func:`detect_ft.engine.fit.fit`, one concern a class.

    class Spy(Hook):
        def after_epoch(self, run):
            print(run.state.epoch, run.stats["loss"], run.row.get("map"))

    train(cfg, hooks=[Spy()])          # or Detector.train(..., hooks=[Spy()])

A hook overrides any of ``before_train``, ``before_epoch``, ``before_step``, ``after_step``,
``after_epoch`` and ``after_train``; each gets the :class:`~detect_ft.engine.run.Run`. ``train`` runs
:class:`~detect_ft.engine.multiscale.MultiScale` when ``train.multi_scale`` is set (on every rank), the
built-in hooks below (on rank 0 only, in this order) and then the caller's (on every rank).
``after_train`` runs also when training raised, with ``run.error`` set, so that hooks can close what
they opened. The epoch lines and the summary are logged (``logging``, logger ``detect_ft.engine.hooks``).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from detect_ft.checkpoint.training import save_checkpoint
from detect_ft.engine.fit import WeightsDiverged
from detect_ft.engine.logs import MetricsLog, format_summary, log_tensorboard, open_tensorboard, write_training_plots
from detect_ft.engine.run import Run
from detect_ft.utils.atomic_io import atomic_path

LOG = logging.getLogger(__name__)


class Hook:
    """Does nothing at every point; subclasses override the points they need."""

    def before_train(self, run: Run) -> None:
        """Before the first epoch (after a resume restored ``run.state``)."""

    def before_epoch(self, run: Run) -> None:
        """Before an epoch trains (``run.epoch`` is its 0-based index; the backbone is frozen or not)."""

    def before_step(self, run: Run) -> None:
        """Before batch ``run.step`` (0-based in the epoch) trains: forward, backward, the step it may end."""

    def after_step(self, run: Run) -> None:
        """After batch ``run.step`` trained, and the optimizer step it ended, if any (not when it raised)."""

    def after_epoch(self, run: Run) -> None:
        """After an epoch trained and (if due) validated: ``run.stats``, ``run.row`` and ``run.state``
        hold its results, ``run.improved`` says whether the chosen metric improved."""

    def after_train(self, run: Run) -> None:
        """After the last epoch, an early stop, or an error (``run.error``)."""


class MetricsLogger(Hook):
    """Appends each epoch's row to ``metrics.jsonl`` (a resumed run first drops the rows it redoes), with
    ``elapsed``: seconds since ``started`` (``time.perf_counter()``; default: when training began)."""

    def __init__(self, path: Path, started: Optional[float] = None) -> None:
        self.path = Path(path)
        self.log: Optional[MetricsLog] = None
        self.started = started

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.log.rows if self.log is not None else []

    def before_train(self, run: Run) -> None:
        self.log = MetricsLog(self.path, keep_epochs=run.state.epoch)
        if self.started is None:
            self.started = time.perf_counter()

    def after_epoch(self, run: Run) -> None:
        run.row["elapsed"] = round(time.perf_counter() - self.started, 3)
        self.log.append(run.row)

    def after_train(self, run: Run) -> None:
        # The epoch whose weights diverged is logged too (its loss shows it), but nothing of it is saved.
        if isinstance(run.error, WeightsDiverged) and self.log is not None:
            self.log.append(run.row)


class Checkpointer(Hook):
    """Writes ``last.pt`` every epoch, and ``best.pt`` when the chosen metric improved.

    A kill between writes is safe: the metrics row is logged first (a resume drops rows past last.pt's
    epoch), and an improved epoch writes best.pt before last.pt (a resume redoes it and rewrites both).
    """

    def __init__(
        self, folder: Path, *, model_name: str, class_names: list[str], category_ids: list[int], config: dict[str, Any]
    ) -> None:
        self.folder = Path(folder)
        self.meta = {
            "model_name": model_name,
            "class_names": class_names,
            "category_ids": category_ids,
            "config": config,
        }

    def before_train(self, run: Run) -> None:
        for stale in self.folder.glob(".*.tmp"):  # left by a process killed mid-write; never a checkpoint
            stale.unlink(missing_ok=True)

    def after_epoch(self, run: Run) -> None:
        target = self.folder / ("best.pt" if run.improved else "last.pt")
        save_checkpoint(target, **run.training_objects(), **self.meta, rng=run.rng, **run.state.checkpoint_entries())
        if run.improved:
            with atomic_path(self.folder / "last.pt") as tmp:
                shutil.copyfile(target, tmp)


class TensorBoard(Hook):
    """Each epoch's scalars as TensorBoard events (nothing when tensorboard is not installed)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer = None

    def before_train(self, run: Run) -> None:
        self.writer = open_tensorboard(self.log_dir)

    def after_epoch(self, run: Run) -> None:
        log_tensorboard(self.writer, run.row)

    def after_train(self, run: Run) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Plots(Hook):
    """``loss.png`` and ``map.png`` redrawn from the metrics log after every epoch."""

    def __init__(self, metrics: MetricsLogger, folder: Path) -> None:
        self.metrics, self.folder = metrics, Path(folder)

    def after_epoch(self, run: Run) -> None:
        write_training_plots(self.metrics.rows, self.folder)


class EpochPrinter(Hook):
    """Logs one line an epoch: loss, img/s, time and, when validated, mAP and the best so far."""

    def __init__(self, best_metric: str) -> None:
        self.best_metric = best_metric

    def after_epoch(self, run: Run) -> None:
        row, state = run.row, run.state
        loss = float("nan") if row["loss"] is None else row["loss"]
        line = f"epoch {row['epoch']}/{run.epochs}: loss {loss:.4f}, {row['img_s']:.1f} img/s, {row['time']:.1f}s"
        if row.get("map") is not None:
            line += f" | val map {row['map']:.4f} map50 {row['map50']:.4f}"
            line += f" | best {self.best_metric} {state.best_value:.4f} @ epoch {state.best_epoch}"
            if state.metrics.get("constant_predictions"):
                line += " | COLLAPSED: the same detections on every image (see the summary)"
        elif row.get("note"):
            line += f" | val: {row['note']}"
        if row["skipped_steps"]:
            line += f" | {row['skipped_steps']} non-finite batches skipped"
        LOG.info(line)


class EarlyStopping(Hook):
    """Stops the run once ``patience`` validations in a row did not improve the chosen metric (0: never)."""

    def __init__(self, patience: int, best_metric: str) -> None:
        self.patience, self.best_metric = patience, best_metric

    def after_epoch(self, run: Run) -> None:
        stale = run.state.stale
        if self.patience and stale >= self.patience:
            run.stop_reason = (
                f"{self.best_metric} did not improve for {stale} validations (train.patience={self.patience})"
            )


class Summary(Hook):
    """The end-of-run summary: what was trained, the best epoch and metric, and the files written."""

    def __init__(
        self,
        run_dir: Path,
        *,
        model_name: str,
        best_metric: str,
        metrics: MetricsLogger,
        time_budget: Optional[float] = None,
    ) -> None:
        self.run_dir, self.model_name, self.best_metric, self.metrics = Path(run_dir), model_name, best_metric, metrics
        self.time_budget = time_budget
        self.started = time.perf_counter()

    def before_train(self, run: Run) -> None:
        self.started = time.perf_counter()

    def after_train(self, run: Run) -> None:
        if run.error is not None:
            return
        run_dir, state = self.run_dir, run.state
        files = [
            run_dir / "config.yaml",
            run_dir / "metrics.jsonl",
            run_dir / "checkpoints" / "last.pt",
            run_dir / "checkpoints" / "best.pt",
            run_dir / "plots" / "loss.png",
            run_dir / "plots" / "map.png",
            run_dir / "tensorboard",
        ]
        LOG.info(
            format_summary(
                run_dir=run_dir,
                model_name=self.model_name,
                rows=self.metrics.rows,
                best={"value": state.best_value, "epoch": state.best_epoch},
                best_metric=self.best_metric,
                stopped=run.stop_reason,
                seconds=time.perf_counter() - self.started,
                files=files,
                constant_predictions=bool(state.metrics.get("constant_predictions")),
                time_budget=self.time_budget,
            )
        )


def default_hooks(
    run_dir: Path,
    *,
    model_name: str,
    class_names: list[str],
    category_ids: list[int],
    config: dict[str, Any],
    best_metric: str,
    patience: int,
    time_budget: Optional[float] = None,
    started: Optional[float] = None,
) -> list[Hook]:
    """What every run writes into ``run_dir`` and logs, in the order the files must be written
    (``time_budget``: the run's budget in seconds, for the summary's advice; None without one; ``started``:
    when the run began, ``time.perf_counter()``, for the rows' ``elapsed``)."""
    metrics = MetricsLogger(run_dir / "metrics.jsonl", started)
    return [
        metrics,
        Checkpointer(
            run_dir / "checkpoints",
            model_name=model_name,
            class_names=class_names,
            category_ids=category_ids,
            config=config,
        ),
        TensorBoard(run_dir / "tensorboard"),
        Plots(metrics, run_dir / "plots"),
        EpochPrinter(best_metric),
        EarlyStopping(patience, best_metric),
        Summary(run_dir, model_name=model_name, best_metric=best_metric, metrics=metrics, time_budget=time_budget),
    ]
