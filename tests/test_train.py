"""End-to-end training runs of a real detector on tiny synthetic data (CPU): the command line's run
directory, data checks, backbone freezing, real photos, and a last batch of one image. The loop's logic
(accumulation, clipping, non-finite guards, early stopping, budgets) is checked on a stub in test_fit.py."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_MODEL as MODEL
from helpers import noise_image, tiny_config, tiny_overrides, write_coco

from detect_ft.config.schema import load_config
from detect_ft.engine import trainer as trainer_module
from detect_ft.engine.hooks import Hook
from detect_ft.utils.errors import DataError

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


def test_a_truncated_training_image_is_found_before_the_first_step(tiny_data, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="detect_ft")
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
    printed = caplog.text
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
