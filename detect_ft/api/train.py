"""Training from Python: :func:`train_config` runs a :class:`~detect_ft.config.schema.Config` as ``detect-ft train``
does and returns a :class:`TrainRun` (what :meth:`detect_ft.Detector.train` returns too)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

LOG = logging.getLogger(__name__)


@dataclass
class TrainRun:
    """What :meth:`Detector.train` returns: the run directory, its best checkpoint, and that epoch's
    metrics row of ``metrics.jsonl`` (``map``, ``map50``, ``map75``, ``epoch``, ...; empty without validation)."""

    run_dir: Path
    best_checkpoint: Path
    metrics: dict[str, Any]


def train_config(cfg, *, progress: bool = True, hooks: Sequence[Any] = ()) -> TrainRun:
    """Run the training ``cfg`` (a :class:`~detect_ft.config.schema.Config`) describes, as ``detect-ft train`` does.

    ``hooks``: extra :class:`detect_ft.engine.hooks.Hook` s (e.g. to log elsewhere), called after the
    built-in ones. The run's lines are ``logging`` records; with no logging configured they show on
    stdout (:func:`detect_ft.engine.logs.console_messages`).
    """
    from detect_ft.engine.openmp import late_import_note
    from detect_ft.engine.trainer import train

    note = late_import_note(cfg.train.device)
    if note:  # a warning: it shows (stderr) also when logging is not configured
        LOG.warning(note)
    run_dir = train(cfg, progress=progress, hooks=hooks)
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():  # no validation split, or none scored: the last epoch is the result
        best = run_dir / "checkpoints" / "last.pt"
    best_row = _best_row(run_dir / "metrics.jsonl", cfg.train.best_metric)
    return TrainRun(run_dir=run_dir, best_checkpoint=best, metrics=best_row)


def _best_row(metrics_path: Path, best_metric: str) -> dict[str, Any]:
    """The metrics.jsonl row of the first validation with the best ``best_metric`` (as best.pt keeps), or {}."""
    if not metrics_path.is_file():
        return {}
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    scored = [r for r in rows if r.get(best_metric) is not None]
    return max(scored, key=lambda r: r[best_metric]) if scored else {}
