"""Arguments shared by the sub-commands that take a config."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from detect_ft.config.schema import Config, load_config
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


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed sub-command: a :class:`DetectFTError` becomes one ``error:`` line and exit code 2."""
    try:
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
