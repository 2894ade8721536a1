"""``detect-ft train CONFIG [key=value ...]``: fine-tune a detector; writes the run directory output.dir.

A thin wrapper over :func:`detect_ft.api.train.train_config` (what ``Detector.train`` runs). Under
``torchrun --nproc_per_node N -m detect_ft train CONFIG ...`` each process runs this command and they
train together with DDP (see docs/training.md).
"""

from __future__ import annotations

import argparse

from detect_ft.cli.common import add_config_arguments, config_from_args

HELP = "fine-tune a detector: checkpoints, metrics.jsonl, plots in output.dir (torchrun for several GPUs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar (for log files)")


def run(args: argparse.Namespace) -> int:
    from detect_ft.api.train import train_config

    cfg = config_from_args(args)
    train_config(cfg, progress=not args.no_progress)
    return 0
