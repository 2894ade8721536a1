"""What a tuning study leaves in its folder: ``trials.csv`` (one row a trial), ``best.yaml`` (the best
trial's config, for ``detect-ft train``), ``history.png`` (each trial's value and the best so far) and
``importance.png`` (Optuna's PED-ANOVA importance of each searched key, which needs no scikit-learn, when
the completed trials allow it).
The plots are standalone matplotlib ``Figure`` objects, as :mod:`detect_ft.evaluation.plots` draws them."""

from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from detect_ft.config.schema import Config, save_config
from detect_ft.utils.atomic_io import write_text_atomic

LOG = logging.getLogger(__name__)
MIN_TRIALS_FOR_IMPORTANCE = 2

BASELINE_ATTR = "baseline"  # the user attribute marking the trial of the config's own setting


@dataclass
class TuneReport:
    """Where a study's results were written, its best value and each key's importance (empty, with
    ``importance_note`` saying why, when it could not be computed)."""

    out_dir: Path
    storage: str
    rows: list[dict[str, Any]]
    table: Path
    best_config: Optional[Path] = None
    best_value: Optional[float] = None
    importance: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""
    plots: list[Path] = field(default_factory=list)


def write_report(
    study: optuna.Study, out_dir: Path, metric: str, best: Optional[Config], *, storage: str
) -> TuneReport:
    """Write the table, best config and plots of ``study`` into ``out_dir``; log the table and the best."""
    rows = trial_rows(study, metric)
    report = TuneReport(out_dir=out_dir, storage=storage, rows=rows, table=out_dir / "trials.csv")
    write_text_atomic(report.table, _csv(rows))
    LOG.info(format_table(rows))
    if best is not None:
        report.best_config, report.best_value = out_dir / "best.yaml", study.best_value
        save_config(best, report.best_config)
        LOG.info(
            f"best: trial {study.best_trial.number}, {metric}={study.best_value:.4f}; its config: "
            f"{report.best_config} (detect-ft train {report.best_config})"
        )
    else:
        LOG.info("no trial completed: no best config written")
    report.importance, report.importance_note = param_importance(study)
    report.plots.append(plot_history(rows, metric, out_dir / "history.png"))
    if report.importance:
        report.plots.append(plot_importance(report.importance, out_dir / "importance.png"))
        LOG.info("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in report.importance.items()))
    else:
        LOG.info(report.importance_note)
    return report


def trial_rows(study: optuna.Study, metric: str) -> list[dict[str, Any]]:
    """One dict a trial: ``trial``, ``state`` (``(baseline)`` added for the config's own setting), ``metric`` (a pruned trial's last reported value), ``epochs``
    (the last validated epoch), ``seconds``, one column per searched key, and ``run_dir``."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    keys = sorted({k for t in trials for k in t.params})
    rows = []
    for t in trials:
        value = t.value if t.state == TrialState.COMPLETE else _last_reported(t)
        seconds = t.duration.total_seconds() if t.duration is not None else None
        state = t.state.name.lower() + (" (baseline)" if t.user_attrs.get(BASELINE_ATTR) else "")
        row = {"trial": t.number, "state": state, metric: value, "epochs": t.last_step}
        row.update({"seconds": None if seconds is None else round(seconds, 1)})
        row.update({k: t.params.get(k) for k in keys})
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        rows.append(row)
    return rows


def _last_reported(trial: FrozenTrial) -> Optional[float]:
    return trial.intermediate_values[trial.last_step] if trial.last_step is not None else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (floats to 4 significant digits)."""
    if not rows:
        return "no trials yet"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def param_importance(study: optuna.Study) -> tuple[dict[str, float], str]:
    """Each searched key's importance (normalized to sum to 1, highest first) for reaching the best tenth of
    the completed trials' values: Optuna's PED-ANOVA, which needs no scikit-learn (its fANOVA does); or
    ``({}, why not)`` when too few trials completed or the values do not vary."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (
            f"parameter importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
            f"({len(completed)} so far): no importance.png"
        )
    try:
        with warnings.catch_warnings():  # experimental in Optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            importance = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ImportError) as exc:
        return {}, f"parameter importance could not be computed ({exc}): no importance.png"
    if not importance or not all(math.isfinite(v) for v in importance.values()):
        return {}, "parameter importance is undefined (the completed trials' values do not vary): no importance.png"
    return dict(importance), ""


def plot_history(rows: list[dict[str, Any]], metric: str, path: Path) -> Path:
    """Each trial's value (completed: dots; pruned: crosses at their last reported value) and the best so far."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    done = [(r["trial"], r[metric]) for r in rows if r["state"] == "complete"]
    pruned = [(r["trial"], r[metric]) for r in rows if r["state"] == "pruned" and r[metric] is not None]
    if done:
        ax.plot(*zip(*done), "o", color="tab:blue", label="completed")
        best, running = [], -math.inf
        for number, value in done:
            running = max(running, value)
            best.append((number, running))
        ax.step(*zip(*best), where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="tab:gray", label="pruned (last validation)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("Optimization history")
    if done or pruned:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_importance(importance: dict[str, float], path: Path) -> Path:
    """A horizontal bar a searched key, its PED-ANOVA importance (the shares sum to 1)."""
    from matplotlib.figure import Figure

    keys = list(importance)[::-1]  # highest at the top
    fig = Figure(figsize=(7, 1.2 + 0.5 * len(keys)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(keys, [importance[k] for k in keys], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, normalized)")
    ax.set_xlim(0, 1)
    ax.set_title("Parameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
