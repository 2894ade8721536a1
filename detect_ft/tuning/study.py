"""``run_study(TuneOptions(...))``: the Optuna study behind ``detect-ft tune``, one training run a trial.

    report = run_study(TuneOptions("my.yaml", trials=20, time_budget="5m"))
    report.best_config      # <tune dir>/best.yaml, for detect-ft train

Each trial loads the config with the user's overrides, the trial's sampled values (:mod:`search_space`),
``train.time_budget`` and ``output.dir=<tune dir>/trial-NNNN``, and trains it through
:func:`detect_ft.api.train.train_config` with a :class:`~detect_ft.tuning.pruning.PruningHook`; the trial's
value is its best validation ``train.best_metric``. The sampler is TPE, seeded (``train.seed`` unless given);
the pruner a median pruner. The study lives in ``sqlite:///<tune dir>/study.db`` (or any Optuna storage
URL) under the tune folder's name, so the same command run again, here or on another machine sharing the
storage, runs only the trials still missing. Needs the ``tune`` extra (``pip install 'detect-ft[tune]'``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from detect_ft.api.train import train_config
from detect_ft.config.schema import Config, load_config
from detect_ft.config.values import duration_seconds
from detect_ft.engine.rundir import remove_unused
from detect_ft.tuning.pruning import PruningHook
from detect_ft.tuning.search_space import Param, as_overrides, baseline, check_space, default_space, load_space
from detect_ft.tuning.trials_report import BASELINE_ATTR, TuneReport, write_report
from detect_ft.utils.errors import ConfigError, DetectFTError

LOG = logging.getLogger(__name__)
# A trial whose training raised (diverged, non-finite losses) is a finished result, not one to run again:
# its message is kept in this user attribute, which marks it as counted.
FAILURE_ATTR = "failure"
MEDIAN_STARTUP_TRIALS = 3  # the median pruner prunes nothing until this many trials completed
MEDIAN_WARMUP_EPOCHS = 1  # nor at the first epoch's validation, the noisiest one (steps are 1-based epochs)
# TPE samples at random until this share of the study's trials (Optuna's default, 10 trials, made a
# 10-trial study a random search), at least 2 and at most 10 of them.
RANDOM_SHARE = 1 / 3


@dataclass
class TuneOptions:
    """What ``detect-ft tune`` takes: the config file and its ``key=value`` overrides (passed to every trial),
    the number of trials the study should hold, each trial's ``train.time_budget`` (None: the config's
    ``train.epochs``), a space file (None: :func:`default_space`), the tune folder (None:
    ``<output.dir>-tune``), an Optuna storage URL and study name (None: SQLite in the folder, the folder's
    name), the sampler's seed (None: ``train.seed``), and an Optuna pruner (None: a median pruner)."""

    config: str | Path
    overrides: Sequence[str] = ()
    trials: int = 20
    time_budget: Optional[str] = "5m"
    space: Optional[str | Path] = None
    output: Optional[str | Path] = None
    storage: Optional[str] = None
    study_name: Optional[str] = None
    seed: Optional[int] = None
    progress: bool = False
    pruner: Any = None
    fixed: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"tune trials {self.trials!r}: give a whole number >= 1")
        budget = []
        if self.time_budget:
            try:
                duration_seconds("train.time_budget", self.time_budget)
            except ConfigError:
                raise ConfigError(
                    f"tune time budget {self.time_budget!r}: give a duration such as 90s, 5m or 1.5h (or none)"
                ) from None
            budget = as_overrides({"train.time_budget": str(self.time_budget)})
        # Every trial's overrides before its sampled values: the user's, then the time budget.
        self.fixed = [*self.overrides, *budget]


class TrialFailed(Exception):
    """A trial's training raised or scored nothing: Optuna records it as failed and the study goes on."""


def run_study(options: TuneOptions) -> TuneReport:
    """Run the trials ``options`` asks for that the study does not hold yet, then write the report (trials
    table, best config, plots) in the tune folder and return it.

    Raises:
        ConfigError: a bad config, space key or value, or a config without a validation split.
        DetectFTError: a trial's data or model could not be loaded (nothing more is tried).
    """
    base = _base_config(options)
    space = load_space(options.space) if options.space else default_space(base)
    check_space(space, options.config, options.fixed)
    out_dir = Path(options.output or f"{base.output.dir}-tune")
    created = tuple(folder for folder in (out_dir, *out_dir.parents) if not folder.exists())
    out_dir.mkdir(parents=True, exist_ok=True)  # before the storage: a SQLite file may be meant to go in it
    storage = options.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    name = options.study_name or out_dir.resolve().name
    seed = base.train.seed if options.seed is None else options.seed
    try:
        with _optuna_errors_only():
            study = open_study(storage, name, seed, options.pruner, random_trials=random_trials(options.trials))
    except DetectFTError:  # a storage that does not open leaves no empty tune folder behind
        remove_unused(created)
        raise
    if not study.trials:  # the first trial is the config's own setting: what the search must beat
        study.enqueue_trial(baseline(space, base), user_attrs={BASELINE_ATTR: True}, skip_if_exists=True)
    missing = options.trials - len(finished_trials(study))
    LOG.info(
        f"study {name} ({storage}): {len(finished_trials(study))} of {options.trials} trials done, "
        f"{max(missing, 0)} to run; maximizing {base.train.best_metric} over " + "; ".join(p.describe() for p in space)
    )
    if missing > 0:
        objective = functools.partial(
            _objective, options=options, space=space, out_dir=out_dir, metric=base.train.best_metric
        )
        with _optuna_errors_only():
            study.optimize(objective, n_trials=missing, callbacks=[_StopAt(options.trials)], catch=(TrialFailed,))
    best = _best_config(study, options)
    return write_report(study, out_dir, base.train.best_metric, best, storage=storage)


def _base_config(options: TuneOptions) -> Config:
    """The config every trial starts from; refused when it has nothing to score trials on."""
    base = load_config(options.config, options.fixed)
    if not base.data.val:
        raise ConfigError(f"detect-ft tune scores each trial on the validation split: set data.val in {options.config}")
    if base.train.eval_interval == 0:
        raise ConfigError("train.eval_interval=0 never validates: detect-ft tune needs validations to score trials")
    return base


def random_trials(trials: int) -> int:
    """How many of a ``trials``-trial study TPE samples at random before it models the results."""
    return max(2, min(10, round(trials * RANDOM_SHARE)))


def open_study(storage: str, name: str, seed: int, pruner: Any = None, random_trials: int = 10) -> optuna.Study:
    """The study ``name`` in ``storage`` (created, or loaded to resume it): maximizing, a TPE sampler seeded
    with ``seed`` that samples ``random_trials`` trials at random first, ``pruner`` or a median pruner."""
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=random_trials)
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS + 1
        )
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=sampler,
            pruner=pruner,
            direction="maximize",
            load_if_exists=True,
        )
    except (ImportError, ValueError, optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DetectFTError(f"Optuna storage {storage}: {problem}") from None
    if study.trials:  # resumed: a sampler seeded as before would draw the first trials' values again
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count towards ``--trials``: completed, pruned, or failed in training (not those
    still running, nor those an interrupt or a load error ended: a rerun runs them again)."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and FAILURE_ATTR in t.user_attrs)
    ]


class _StopAt:
    """Stops the study once it holds ``trials`` finished trials, counting those other machines ran."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if len(finished_trials(study)) >= self.trials:
            study.stop()


def _objective(trial: optuna.Trial, options: TuneOptions, space: list[Param], out_dir: Path, metric: str) -> float:
    """One trial: train the sampled config; its best validation ``metric``, or TrialPruned / TrialFailed."""
    params = {p.key: p.suggest(trial) for p in space}
    run_dir = out_dir / f"trial-{trial.number:04d}"
    cfg = load_config(
        options.config, [*options.fixed, *as_overrides(params), *as_overrides({"output.dir": str(run_dir)})]
    )
    own = " (the config's own setting)" if trial.user_attrs.get(BASELINE_ATTR) else ""
    LOG.info(f"trial {trial.number}{own}: " + " ".join(as_overrides(params)))
    trial.set_user_attr("run_dir", str(run_dir))
    hook = PruningHook(trial, metric)
    try:
        result = train_config(cfg, progress=options.progress, hooks=[hook])
    except DetectFTError as exc:
        if not hook.started:  # the data or model could not be loaded: every trial would fail alike
            raise
        trial.set_user_attr(FAILURE_ATTR, str(exc))
        LOG.warning(f"trial {trial.number} failed: {exc}")
        raise TrialFailed(str(exc)) from exc
    trial.set_user_attr("run_dir", str(result.run_dir))
    if hook.pruned:
        raise optuna.TrialPruned(f"pruned at epoch {hook.pruned_at}")
    value = result.metrics.get(metric)
    if value is None:
        trial.set_user_attr(FAILURE_ATTR, f"no validation scored {metric}")
        raise TrialFailed(f"trial {trial.number}: no validation scored {metric}")
    LOG.info(f"trial {trial.number}: {metric}={value:.4f} ({result.run_dir})")
    return float(value)


def _best_config(study: optuna.Study, options: TuneOptions) -> Optional[Config]:
    """The config of the best completed trial (output.dir as the user's config says), or None."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    return load_config(options.config, [*options.fixed, *as_overrides(study.best_trial.params)])


@contextlib.contextmanager
def _optuna_errors_only() -> Iterator[None]:
    """Optuna's own lines repeat what the trials log (its failed-trial warning with a traceback, too, where
    the command prints one error line): only its errors show, while the study runs."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)
