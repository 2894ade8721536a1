"""Arguments shared by the sub-commands that take a config, running a parsed sub-command, and where the
command line shows the ``detect_ft`` loggers' messages (:func:`command_logging`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from types import ModuleType
from typing import Iterator

from detect_ft.config.schema import Config, load_config
from detect_ft.engine.logs import bare_stdout_handler
from detect_ft.utils.errors import DetectFTError


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("config", nargs=None if required else "?", help="YAML config file (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=5 data.classes=[a,b]"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides stand anywhere, also after options.

    argparse stops filling a ``nargs="*"`` positional once an option follows it, so overrides written
    after ``--weights X`` would be rejected; they are collected from the leftovers instead.
    """
    args, extra = parser.parse_known_args(argv)
    overrides = [token for token in extra if "=" in token and not token.startswith("-")]
    unknown = [token for token in extra if token not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    return args


CONSOLE_HANDLER = "detect_ft.cli"


@contextlib.contextmanager
def command_logging() -> Iterator[None]:
    """For the duration of a command: the ``detect_ft`` loggers' messages at INFO and up on stdout, the
    bare message as ``print`` would write it (the training banner, epoch lines, summary).

    The handler writes to the ``sys.stdout`` of the moment the command starts and is removed when it
    ends; a command run inside another (the demo's steps) keeps the outer one, so no line shows twice.
    """
    logger = logging.getLogger("detect_ft")
    if any(h.get_name() == CONSOLE_HANDLER for h in logger.handlers):
        yield
        return
    handler = bare_stdout_handler()
    handler.set_name(CONSOLE_HANDLER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed sub-command, its messages logged to stdout (:func:`command_logging`): a
    :class:`DetectFTError` becomes one ``error:`` line and exit code 2."""
    try:
        with command_logging():
            return int(args.run(args) or 0)
    except DetectFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_command(name: str, module: ModuleType, argv: list[str]) -> int:
    """Run one sub-command module (``HELP``, ``add_arguments``, ``run``) as ``detect-ft NAME ARGV`` would."""
    parser = argparse.ArgumentParser(prog=f"detect-ft {name}", description=module.HELP)
    module.add_arguments(parser)
    parser.set_defaults(run=module.run)
    return run_parsed(parse_with_overrides(parser, argv))
