"""``detect-ft`` command line: one sub-command per module in this package.

Each sub-command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
and imports heavy libraries inside ``run`` so that ``detect-ft --help`` stays fast. A
:class:`~detect_ft.utils.errors.DetectFTError` becomes one ``error:`` line and exit code 2, never a traceback.
While a command runs, the ``detect_ft`` loggers' messages show on stdout, message only
(:func:`~detect_ft.cli.common.command_logging`).
"""

from __future__ import annotations

import argparse
from types import ModuleType

from detect_ft._version import __version__
from detect_ft.cli import (
    check_data_cmd,
    convert_cmd,
    demo_cmd,
    eval_cmd,
    export_cmd,
    models_cmd,
    predict_cmd,
    train_cmd,
    tune_cmd,
)
from detect_ft.cli.common import parse_with_overrides, run_parsed

COMMANDS: dict[str, ModuleType] = {
    "models": models_cmd,
    "export": export_cmd,
    "predict": predict_cmd,
    "eval": eval_cmd,
    "check-data": check_data_cmd,
    "demo": demo_cmd,
    "convert": convert_cmd,
    "train": train_cmd,
    "tune": tune_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detect-ft", description="Fine-tune, evaluate and export torchvision object detectors."
    )
    parser.add_argument("--version", action="version", version=f"detect-ft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_with_overrides(build_parser(), argv)


def main(argv: list[str] | None = None) -> int:
    return run_parsed(parse_args(argv))
