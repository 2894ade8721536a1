"""``detect-ft models``: list the registered detectors."""

from __future__ import annotations

import argparse

HELP = "list the detectors that build_model() knows"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from detect_ft.models import MODELS

    width = max(map(len, MODELS))
    for name, spec in MODELS.items():
        print(f"{name:<{width}}  {spec.description}")
    return 0
