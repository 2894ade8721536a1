"""Optimizer groups and LR schedules, checkpoint helpers and the metrics log (the EMA: test_fit.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from detect_ft.checkpoint.training import (
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from detect_ft.engine.logs import MetricsLog, write_training_plots
from detect_ft.engine.optim import (
    WARMUP_START_FACTOR,
    build_optimizer,
    build_scheduler,
    lr_factor,
    optimizer_steps_per_epoch,
)
from detect_ft.utils.errors import DetectFTError

MODEL = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="module")
def detector():
    from detect_ft.models import build_model

    return build_model(MODEL, 2, "none", min_size=128, max_size=128)


def test_warmup_then_cosine() -> None:
    f = lr_factor("cosine", total_steps=110, steps_per_epoch=10, warmup_iters=10)
    assert f(0) == pytest.approx(WARMUP_START_FACTOR)
    assert f(5) == pytest.approx(WARMUP_START_FACTOR * 0.5 + 0.5)  # linear in between
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)  # half way through the decay
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_multistep_milestones_are_epochs_and_constant_stays() -> None:
    f = lr_factor("multistep", total_steps=100, steps_per_epoch=10, milestones=[3, 6], gamma=0.1)
    assert [f(s) for s in (0, 29, 30, 59, 60, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    g = lr_factor("constant", total_steps=100, steps_per_epoch=10, warmup_iters=4)
    assert g(2) == pytest.approx(WARMUP_START_FACTOR * 0.5 + 0.5) and g(4) == g(99) == 1.0
    assert optimizer_steps_per_epoch(10, 3) == 4 and optimizer_steps_per_epoch(10, 1) == 10


def test_sgd_groups_backbone_multiplier_and_scheduler(detector) -> None:
    opt = build_optimizer(
        detector, MODEL, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, backbone_lr_mult=0.1
    )
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] is True
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"backbone", "backbone_no_decay", "heads", "heads_no_decay"}
    assert groups["backbone"]["lr"] == pytest.approx(0.01) and groups["heads"]["lr"] == pytest.approx(0.1)
    assert groups["heads_no_decay"]["weight_decay"] == 0 and groups["heads"]["weight_decay"] == 1e-4
    assert all(p.ndim <= 1 for p in groups["backbone_no_decay"]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(detector.parameters()))
    sched = build_scheduler(
        opt, scheduler="multistep", total_steps=20, steps_per_epoch=5, warmup_iters=0, milestones=[2], gamma=0.5
    )
    for _ in range(10):
        opt.step()
        sched.step()
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(0.005) and groups["heads"]["lr"] == pytest.approx(0.05)


def test_adamw_uses_momentum_as_beta1(detector) -> None:
    opt = build_optimizer(detector, MODEL, optimizer="adamw", lr=1e-3, momentum=0.8, weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.999)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(detector, MODEL, optimizer="lion", lr=1e-3)


def test_checkpoint_round_trip_and_rng(tmp_path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(1))
    save_checkpoint(
        tmp_path / "c.pt",
        model=model,
        model_name="toy",
        class_names=["a", "b"],
        category_ids=[3, 7],
        config={"x": 1},
        epoch=2,
        iteration=40,
        optimizer=opt,
        rng=[state],
    )
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert (ckpt["epoch"], ckpt["iteration"], ckpt["category_ids"], ckpt["num_classes"]) == (2, 40, [3, 7], 2)
    assert torch.equal(ckpt["model"]["weight"], model.weight) and ckpt["ema"] is None
    assert ckpt["optimizer"]["state"][0]["momentum_buffer"].shape == (2, 3)
    set_rng_state(ckpt["rng"][0])
    assert (random.random(), np.random.rand()) == draws[:2] and torch.equal(torch.rand(1), draws[2])
    assert not list(tmp_path.glob(".*"))  # atomic write leaves no temporary file

    assert resolve_resume("", tmp_path) is None and resolve_resume("auto", tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "c.pt").rename(tmp_path / "checkpoints" / "last.pt")
    assert resolve_resume("auto", tmp_path) == tmp_path / "checkpoints" / "last.pt"
    weights_only = tmp_path / "w.pt"
    torch.save({"model": {}, "epoch": 1, "optimizer": None}, weights_only)
    with pytest.raises(DetectFTError, match="no training state.*model.weights="):
        load_checkpoint(weights_only)


def test_metrics_log_keeps_rows_up_to_the_resumed_epoch_and_plots(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for epoch in (1, 2, 3):
        row = {
            "epoch": epoch,
            "loss": 3.0 / epoch,
            "losses": {"cls": 2.0 / epoch, "box": 1.0 / epoch},
            "lr": 0.1,
            "img_s": 10.0,
            "time": 1.0,
        }
        if epoch != 2:
            row.update(map=0.1 * epoch, map50=0.2 * epoch, map75=0.05 * epoch)
        log.append(row)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2, 3]
    resumed = MetricsLog(path, keep_epochs=2)
    assert [r["epoch"] for r in resumed.rows] == [1, 2]
    assert [p.name for p in write_training_plots(log.rows, tmp_path / "plots")] == ["loss.png", "map.png"]
    assert [p.name for p in write_training_plots(log.rows[1:2], tmp_path / "plots2")] == ["loss.png"]  # never validated
