"""Precise BatchNorm statistics before validation: what is recomputed, what is left alone."""

from __future__ import annotations

import torch
import torch.nn as nn
from helpers import TINY_MODEL
from torchvision.ops.misc import FrozenBatchNorm2d

from detect_ft.data.split import SplitSpec, load_checked_split
from detect_ft.engine.batchnorm import calibration_records, recalibrate_batchnorm
from detect_ft.models import build_model


def _train_split(tiny_data):
    spec = SplitSpec(format="coco", root=str(tiny_data))
    records, _ = load_checked_split(spec, "train.json", [])
    return records


def test_stale_statistics_are_recomputed_the_same_way_every_time(tiny_data, one_thread):
    records = calibration_records(_train_split(tiny_data), count=4)
    assert len(records.records) == 4
    model = build_model(TINY_MODEL, 2, "none", min_size=128, max_size=128)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.running_var.fill_(1e6)  # as stale as statistics get
    momenta = [n.momentum for n in norms]
    assert recalibrate_batchnorm(model, records, device="cpu", batch_size=2) == len(norms)
    first = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert all(bool((n.running_var < 1e5).all()) for n in norms)
    assert [n.momentum for n in norms] == momenta and not model.training
    recalibrate_batchnorm(model, records, device="cpu", batch_size=2)
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items() if "running" in k)


def test_models_without_batchnorm_run_nothing(tiny_data):
    frozen = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
    assert recalibrate_batchnorm(frozen, _train_split(tiny_data), device="cpu") == 0
