"""``detect-ft tune CONFIG --trials N --time-budget 5m [key=value ...]``: hyper-parameter search with Optuna.

Parses the arguments and calls :func:`detect_ft.tuning.study.run_study` (see there and docs/training.md,
"Search"). Needs the ``tune`` extra: ``pip install 'detect-ft[tune]'``.
"""

from __future__ import annotations

import argparse

from detect_ft.cli.common import add_config_arguments

HELP = "hyper-parameter search (Optuna, 'tune' extra): one training run a trial, table, best.yaml, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--trials", type=int, default=20, help="trials the study should hold (default 20)")
    parser.add_argument(
        "--time-budget",
        default="5m",
        help="train.time_budget of each trial (default 5m); 'none': each trial trains the config's train.epochs",
    )
    parser.add_argument("--space", help="YAML search space (key: {type, low, high, log, choices}); default: built in")
    parser.add_argument("--output", help="tune folder (default <output.dir>-tune): trial runs, trials.csv, best.yaml")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<tune folder>/study.db)")
    parser.add_argument("--study-name", help="study name in the storage (default: the tune folder's name)")
    parser.add_argument("--seed", type=int, help="TPE sampler seed (default train.seed)")
    parser.add_argument("--progress", action="store_true", help="show each trial's per-epoch progress bar")


def run(args: argparse.Namespace) -> int:
    from detect_ft.tuning import require_optuna

    require_optuna()
    from detect_ft.tuning.study import TuneOptions, run_study

    budget = None if str(args.time_budget).strip().lower() in ("none", "off", "") else args.time_budget
    options = TuneOptions(
        config=args.config,
        overrides=list(args.overrides or []),
        trials=args.trials,
        time_budget=budget,
        space=args.space,
        output=args.output,
        storage=args.storage,
        study_name=args.study_name,
        seed=args.seed,
        progress=args.progress,
    )
    run_study(options)
    return 0
