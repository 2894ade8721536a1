"""Hyper-parameter search over training runs with Optuna (``detect-ft tune``; the ``tune`` extra).

:mod:`search_space` (what is searched; torch- and optuna-free), :mod:`pruning` (the engine hook that reports
validations to a trial), :mod:`study` (:func:`~detect_ft.tuning.study.run_study`), :mod:`trials_report`
(the table, best config and plots). :func:`require_optuna` is the one place that says how to install Optuna.
"""

from __future__ import annotations

from types import ModuleType

from detect_ft.utils.errors import DetectFTError


def require_optuna() -> ModuleType:
    """The ``optuna`` module; a one-line DetectFTError naming the extra when it is not installed."""
    try:
        import optuna
    except ImportError:
        raise DetectFTError(
            "detect-ft tune needs Optuna, which is not installed: pip install 'detect-ft[tune]' (or pip install optuna)"
        ) from None
    return optuna
