"""End-to-end training runs on tiny synthetic data (CPU): the run directory, data checks, freezing, and
the inner loop's accumulation, clipping and non-finite guards on a toy model."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.nn as nn
import yaml
from conftest import TINY_MODEL as MODEL
from conftest import noise_image, tiny_config, tiny_overrides, write_coco

from detect_ft.config.schema import load_config
from detect_ft.engine import trainer as trainer_module
from detect_ft.engine.fit import WeightsDiverged
from detect_ft.engine.hooks import Hook
from detect_ft.engine.loop import train_one_epoch
from detect_ft.engine.optim import LRSchedule, build_scheduler, schedule_of
from detect_ft.utils.errors import DataError, DetectFTError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_run_writes_every_file(tiny_data, tmp_path, capsys) -> None:
    from detect_ft.cli.main import main
    from detect_ft.models import load_detector

    out = tmp_path / "run"
    config_path = tmp_path / "config.yaml"
    sections: dict = {}
    for text in tiny_overrides(tiny_data, out) + ["train.epochs=2", "train.ema=true"]:
        key, value = text.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    config_path.write_text(yaml.safe_dump(sections))

    assert main(["train", str(config_path), "augment.preset=light", "--no-progress"]) == 0

    assert load_config(out / "config.yaml").train.ema is True  # the resolved config, overrides included
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert {"loss", "losses", "lr", "img_s", "time", "map", "map50", "map75"} <= set(row)
        assert math.isfinite(row["loss"]) and row["img_s"] > 0 and 0 <= row["map"] <= 1
        assert set(row["losses"]) == {"bbox_regression", "classification"}
    for name in ("loss.png", "map.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if importlib.util.find_spec("tensorboard") is not None:
        assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    else:
        assert not (out / "tensorboard").exists()

    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {
        "model",
        "model_name",
        "num_classes",
        "class_names",
        "category_ids",
        "config",
        "epoch",
        "iteration",
        "optimizer",
        "scheduler",
        "scaler",
        "ema",
        "rng",
        "metrics",
        "version",
    } <= set(last)
    assert last["epoch"] == 2 and last["iteration"] == 4 and last["class_names"] == ["circle", "square"]
    assert last["metrics"]["map"] == rows[-1]["map"]
    # With EMA on, `model` is the average and the raw weights are kept for resuming.
    assert any(not torch.equal(last["model"][k], v) for k, v in last["ema"]["training_model"].items())
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    best_epoch = max(rows, key=lambda r: (r["map"], -r["epoch"]))["epoch"]
    assert best["epoch"] == best_epoch
    model, meta = load_detector(out / "checkpoints" / "best.pt")
    assert meta["model_name"] == MODEL and meta["class_names"] == ["circle", "square"]
    assert all(torch.equal(v, best["model"][k]) for k, v in model.state_dict().items())
    printed = capsys.readouterr().out
    assert "training finished" in printed and f"best map {best['metrics']['map']:.4f}" in printed
    assert not list((out / "checkpoints").glob(".*"))  # no temporary files left behind


def test_data_errors_stop_training_before_it_starts(tiny_data, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    (broken / "images" / "train_000003.jpg").unlink()
    out = tmp_path / "run"
    with pytest.raises(DataError, match="train_000003.jpg"):
        trainer_module.train(tiny_config(broken, out), progress=False)
    assert not (out / "checkpoints").exists()


class EpochSpy(Hook):
    """Records, per epoch, which parameters were trainable when it started and which changed in it."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict, dict]] = []

    def before_epoch(self, run) -> None:
        self.before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        self.trainable = {n: p.requires_grad for n, p in run.model.named_parameters()}

    def after_epoch(self, run) -> None:
        changed = {n: not torch.equal(self.before[n], p) for n, p in run.model.named_parameters()}
        self.seen.append((self.trainable, changed))


def test_backbone_frozen_for_first_epochs_then_restored(tiny_data, tmp_path) -> None:
    from detect_ft.models import build_model
    from detect_ft.models.finetune import backbone_parameter_ids

    spy = EpochSpy()
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        "train.epochs=2",
        "train.freeze_backbone_epochs=1",
        "train.eval_interval=0",
        "model.trainable_backbone_layers=3",
    )
    trainer_module.train(cfg, progress=False, hooks=[spy])

    reference = build_model(MODEL, 2, weights="none")
    ids = backbone_parameter_ids(reference, MODEL)
    backbone = {n for n, p in reference.named_parameters() if id(p) in ids}
    (trainable1, changed1), (trainable2, changed2) = spy.seen
    assert backbone and not any(trainable1[n] or changed1[n] for n in backbone)
    heads = set(trainable1) - backbone
    assert all(trainable1[n] for n in heads) and any(changed1[n] for n in heads)
    # Epoch 2 trains what model.trainable_backbone_layers=3 chose: some backbone stages, not all.
    assert 0 < sum(trainable2[n] for n in backbone) < len(backbone)
    assert not any(changed2[n] for n in backbone if not trainable2[n])
    assert any(changed2[n] for n in backbone if trainable2[n])


def test_train_puts_back_the_global_determinism_settings(tiny_data, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        cfg = tiny_config(
            tiny_data,
            tmp_path / "run",
            "train.deterministic=true",
            "train.eval_interval=0",
            "train.max_iters_per_epoch=1",
        )
        trainer_module.train(cfg, progress=False)
        assert torch.backends.cudnn.deterministic is False and torch.backends.cudnn.benchmark is True
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


class ToyDetector(nn.Module):
    """Loss = mean over the batch of (w . mean(image) - target)^2, or NaN for images whose target is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -0.5, 1.0]))

    def forward(self, images, targets):
        values = torch.stack([self.w @ image.mean(dim=(1, 2)) for image in images])
        goals = torch.stack([t["goal"] for t in targets])
        return {"loss_fit": ((values - goals) ** 2).mean()}


def _batches(goals: list[list[float]], seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        ([torch.rand(3, 4, 4, generator=g) for _ in batch], [{"goal": torch.tensor(x)} for x in batch])
        for batch in goals
    ]


def test_accumulation_equals_the_larger_batch() -> None:
    small = _batches([[1.0, 2.0], [3.0, 4.0]])
    big = [([*small[0][0], *small[1][0]], [*small[0][1], *small[1][1]])]
    results = []
    for loader, accumulate in ((small, 2), (big, 1)):
        model = ToyDetector()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        stats = train_one_epoch(model, optimizer, loader, torch.device("cpu"), accumulate=accumulate, progress=False)
        assert stats["steps"] == 1
        results.append(model.w.detach())
    torch.testing.assert_close(results[0], results[1])


def test_gradient_clipping_bounds_the_update() -> None:
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    start = model.w.detach().clone()
    train_one_epoch(
        model, optimizer, _batches([[100.0, 100.0]]), torch.device("cpu"), clip_grad_norm=0.01, progress=False
    )
    assert (model.w.detach() - start).norm() == pytest.approx(0.01, rel=1e-4)


def test_steps_the_grad_scaler_skips_do_not_advance_the_schedule() -> None:
    # fp16 runs start with a scale so large that the first gradients overflow and the scaler skips those
    # steps; the LR schedule must wait for the real ones (and torch must not warn that it ran ahead).
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # goal 1e4: loss x scale overflows to inf
    seen = []

    @contextlib.contextmanager
    def around_batch(i: int):
        before = model.w.detach().clone()
        yield
        seen.append((not torch.equal(before, model.w.detach()), scheduler.last_epoch))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = train_one_epoch(
            model,
            optimizer,
            _batches([[1e4], [1e4], [1.0], [1.0]]),
            torch.device("cpu"),
            scheduler=scheduler,
            scaler=scaler,
            progress=False,
            around_batch=around_batch,
        )
    assert seen == [(False, 0), (False, 0), (True, 1), (True, 2)]
    assert stats["steps"] == 2


def test_nonfinite_losses_are_skipped_then_stop_the_run() -> None:
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    nan = float("nan")
    stats = train_one_epoch(
        model, optimizer, _batches([[1.0], [nan], [2.0]]), torch.device("cpu"), max_nonfinite=2, progress=False
    )
    assert stats["skipped_steps"] == 1 and stats["nonfinite_run"] == 0 and stats["iterations"] == 3
    assert math.isfinite(stats["loss"]) and torch.isfinite(model.w).all()
    # The count carries across epochs: one NaN left over from before plus one more reaches the limit.
    with pytest.raises(DetectFTError, match="not finite.*2 batches in a row.*train.max_nonfinite=2"):
        train_one_epoch(
            model,
            optimizer,
            _batches([[nan], [1.0]]),
            torch.device("cpu"),
            max_nonfinite=2,
            nonfinite_run=1,
            progress=False,
        )


class FakeValidation(Hook):
    """Replaces the run's evaluation by given (map, map50) values, one per validation."""

    def __init__(self, scores: list[tuple[float, float]]) -> None:
        self.scores = iter(scores)

    def before_train(self, run) -> None:
        run.evaluate = self.evaluate

    def evaluate(self, model) -> dict:
        m, m50 = next(self.scores)
        return {"map": m, "map50": m50, "map75": 0.0, "seconds": 0.0}


def test_best_checkpoint_and_early_stopping_follow_the_chosen_metric(tiny_data, tmp_path, capsys) -> None:
    fake = FakeValidation([(0.1, 0.5), (0.3, 0.4), (0.2, 0.45), (0.9, 0.9)])
    out = tmp_path / "run"
    cfg = tiny_config(
        tiny_data, out, "train.epochs=4", "train.best_metric=map50", "train.patience=2", "train.max_iters_per_epoch=1"
    )
    trainer_module.train(cfg, progress=False, hooks=[fake])

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["map50"] for r in rows] == [0.5, 0.4, 0.45]  # stopped after 2 validations without a better map50
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 1 and last["epoch"] == 3 and last["trainer"]["stale"] == 2
    assert best["trainer"] == {"best_value": 0.5, "best_epoch": 1, "stale": 0, "nonfinite_run": 0}
    assert "stopped early: map50 did not improve for 2 validations" in capsys.readouterr().out


RACCOON = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "raccoon-voc"


@pytest.mark.slow
@pytest.mark.skipif(not RACCOON.is_dir(), reason="../shared/datasets/raccoon-voc is absent")
def test_trains_on_the_real_raccoon_voc_split(tmp_path) -> None:
    """Real photos of many sizes through the VOC adapter, the doctor, augmentation and validation."""
    out = tmp_path / "run"
    cfg = load_config(
        None,
        [
            f"model.name={MODEL}",
            "model.weights=none",
            "model.min_size=160",
            "model.max_size=160",
            "data.format=voc",
            f"data.root={RACCOON}",
            "data.train=train",
            "data.val=val",
            "augment.preset=ssd",
            "train.epochs=1",
            "train.batch_size=4",
            "train.workers=2",
            "train.max_iters_per_epoch=3",
            "train.aspect_ratio_grouping=true",
            f"output.dir={out}",
        ],
    )
    trainer_module.train(cfg, progress=False)
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["iterations"] == 3 and math.isfinite(row["loss"]) and 0 <= row["map"] <= 1
    checkpoint = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert checkpoint["class_names"] == ["raccoon"]


class Poison(Hook):
    """Leaves a nan in the first weight before each epoch, as a diverging step would; notes how the run ended."""

    def before_epoch(self, run) -> None:
        with torch.no_grad():
            next(run.model.parameters()).view(-1)[0] = float("nan")

    def after_train(self, run) -> None:
        self.error = run.error


def test_nonfinite_weights_are_never_saved_and_metrics_stay_strict_json(tiny_data, tmp_path) -> None:
    poison = Poison()
    out = tmp_path / "run"
    with pytest.raises(DetectFTError, match="non-finite.*epoch 1/1.*no checkpoint was written .it was the first epoch"):
        trainer_module.train(tiny_config(tiny_data, out), progress=False, hooks=[poison])
    assert isinstance(poison.error, WeightsDiverged)
    assert not (out / "checkpoints" / "best.pt").exists() and not (out / "checkpoints" / "last.pt").exists()
    text = (out / "metrics.jsonl").read_text()
    rows = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
        for line in text.splitlines()
    ]
    assert rows[0]["epoch"] == 1 and rows[0]["loss"] is None and rows[0]["skipped_steps"] == 2


class PoisonSecondEpoch(Poison):
    def before_epoch(self, run) -> None:
        if run.epoch == 1:
            super().before_epoch(run)


def test_weights_diverging_after_a_saved_epoch_name_the_checkpoint_that_keeps_it(tiny_data, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, out, "train.epochs=2", "train.eval_interval=0")
    with pytest.raises(DetectFTError, match=r"epoch 2/2.*checkpoints/last.pt keeps epoch 1, the last finite one"):
        trainer_module.train(cfg, progress=False, hooks=[PoisonSecondEpoch()])
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_a_validation_split_without_boxes_trains_and_says_so(tiny_data, tmp_path, capsys) -> None:
    val = json.loads((tiny_data / "val.json").read_text())
    empty = tmp_path / "data"
    shutil.copytree(tiny_data, empty)
    (empty / "val.json").write_text(json.dumps({**val, "annotations": []}))
    out = tmp_path / "run"
    trainer_module.train(tiny_config(empty, out), progress=False)
    printed = capsys.readouterr().out
    assert "no boxes to score" in printed
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["map"] is None and "no boxes to score" in row["note"]
    assert (out / "checkpoints" / "last.pt").is_file() and not (out / "checkpoints" / "best.pt").exists()


def test_a_truncated_training_image_is_found_before_the_first_step(tiny_data, tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    image = broken / "images" / "train_000003.jpg"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # the header survives, the end marker not
    overrides = ["train.max_iters_per_epoch=5", "train.eval_interval=0"]  # 5 batches of 2: no batch of one
    with pytest.raises(DataError) as info:
        trainer_module.train(tiny_config(broken, tmp_path / "a", *overrides), progress=False)
    assert "train_000003.jpg: is truncated" in str(info.value) and "data.on_unreadable_image=drop" in str(info.value)
    assert not (tmp_path / "a").exists()  # found by the check before training, not by the loader
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_module.train(
            tiny_config(broken, tmp_path / "b", *overrides, "data.on_unreadable_image=drop"), progress=False
        )
    assert not [w for w in caught if "train_000003" in str(w.message)]
    printed = capsys.readouterr().out
    assert "train: 11 images" in printed and "1 unreadable_image (dropped image)" in printed
    assert (tmp_path / "b" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize(("num_images", "extra"), [(1, ["model.anchors=auto"]), (3, [])])
def test_a_last_batch_of_one_image_trains_under_multi_scale(tmp_path, num_images, extra) -> None:
    """1 image (anchors fitted to its one box), or 1 + a batch of 2: the epoch's last batch holds one image
    (BatchNorm on SSDlite's 1x1 maps)."""
    names = [f"{i}.jpg" for i in range(num_images)]
    for i, name in enumerate(names):
        noise_image(tmp_path / name, 96, 96, seed=i)
    write_coco(tmp_path, [(n, 96, 96) for n in names], {n: [[10, 12, 40, 30, "cat"]] for n in names})
    out = tmp_path / "run"
    overrides = [o for o in tiny_overrides(tmp_path, out) if not o.startswith(("data.val", "train.max_iters"))]
    trainer_module.train(load_config(None, [*overrides, "train.multi_scale=[64,96]", *extra]), progress=False)
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["iterations"] == 1 + num_images // 2 and math.isfinite(row["loss"])
    assert (out / "checkpoints" / "last.pt").is_file()


def _slow_start_loader(batches: list, first_wait: float, wait: float):
    """Yields ``batches``, the first after ``first_wait`` seconds (a loader's workers starting), the rest
    after ``wait``."""
    for i, batch in enumerate(batches):
        time.sleep(first_wait if i == 0 else wait)
        yield batch


def _budgeted_epoch(
    first_wait: float, wait: float, seconds_left: float, *, batches: int = 8, step_seconds: Optional[float] = None
) -> LRSchedule:
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = build_scheduler(optimizer, scheduler="cosine", total_steps=40, steps_per_epoch=batches)
    loader = _slow_start_loader(_batches([[1.0]] * batches), first_wait, wait)
    deadline = time.perf_counter() + seconds_left
    train_one_epoch(
        model,
        optimizer,
        loader,
        torch.device("cpu"),
        scheduler=scheduler,
        progress=False,
        deadline=deadline,
        step_seconds=step_seconds,
    )
    (schedule,) = schedule_of(scheduler)
    return schedule


def test_a_slow_first_batch_does_not_cut_a_budgets_schedule() -> None:
    # 40 steps at 0.01 s fit the 5 s left many times over; the first batch's 1 s is start-up, not pace
    # (taken as the pace, it left 4 more steps).
    assert _budgeted_epoch(first_wait=1.0, wait=0.01, seconds_left=5.0).total_steps == 40


def test_a_pace_too_slow_for_the_deadline_ends_the_schedule_there() -> None:
    schedule = _budgeted_epoch(first_wait=0.05, wait=0.05, seconds_left=0.6)
    assert 3 <= schedule.total_steps <= 16  # about 12 steps fit 0.6 s at 0.05 s a step, not the planned 40


def test_an_epoch_too_short_to_time_its_pace_fits_the_schedule_at_the_budgets_estimate() -> None:
    # 2 steps a epoch never time MIN_TIMED_STEPS of their own: the budget's 0.5 s a step leaves about 2 more
    # steps in the 1 s left, not the planned 40 (a deadline hit later would leave the LR above 0).
    assert _budgeted_epoch(0.0, 0.0, 1.0, batches=2).total_steps == 40
    assert _budgeted_epoch(0.0, 0.0, 1.0, batches=2, step_seconds=0.5).total_steps <= 4
