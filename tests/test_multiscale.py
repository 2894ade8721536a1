"""Multi-scale training (train.multi_scale): one input size per batch from a seeded draw, the configured
size back for validation, checkpoints and export, SSD300 refused, and exact resume kept."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config
from test_resume import RESUME_OVERRIDES, _assert_same_training

from detect_ft.config.schema import load_config
from detect_ft.engine.distributed import unwrap
from detect_ft.engine.hooks import Hook
from detect_ft.engine.multiscale import MultiScale, check_multi_scale, input_size, set_input_size
from detect_ft.engine.trainer import train
from detect_ft.models import build_model, load_detector
from detect_ft.utils.errors import ConfigError

SIZES = [96, 128, 160]  # tiny_config's ssdlite takes 128 px


pytestmark = pytest.mark.usefixtures("one_thread")


def test_sizes_come_from_the_list_and_repeat_with_the_seed() -> None:
    a, b, other = MultiScale(SIZES, seed=7), MultiScale(SIZES, seed=7), MultiScale(SIZES, seed=8)
    drawn = [a.size_for(epoch, step) for epoch in range(3) for step in range(40)]
    assert set(drawn) == set(SIZES)  # every size is used, nothing else
    assert drawn == [b.size_for(epoch, step) for epoch in range(3) for step in range(40)]
    assert drawn != [other.size_for(epoch, step) for epoch in range(3) for step in range(40)]
    assert [a.size_for(0, step) for step in range(40)] != [a.size_for(1, step) for step in range(40)]
    with pytest.raises(ValueError):
        MultiScale([])


@pytest.mark.parametrize(
    ("name", "square"), [("ssdlite320_mobilenet_v3_large", True), ("fasterrcnn_mobilenet_v3_large_320_fpn", False)]
)
def test_set_input_size_and_restore(name: str, square: bool) -> None:
    model = build_model(name, 2, "none")
    configured = input_size(model)
    set_input_size(model, 224)
    transform = model.transform
    assert transform.min_size == (224,)
    if square:
        assert transform.fixed_size == (224, 224) and transform.max_size == 224
    else:
        assert transform.fixed_size is None and transform.max_size == configured[1]  # the long-side cap stays
    model.train()
    images = [torch.rand(3, 150, 200)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 80.0, 90.0]]), "labels": torch.tensor([1])}]
    resized, _ = transform(images, targets)
    assert min(resized.image_sizes[0]) == 224 and (not square or resized.image_sizes[0] == (224, 224))
    set_input_size(model, configured)
    assert input_size(model) == configured


def test_ssd300_is_refused(tiny_data, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"'train.multi_scale'.*ssd300_vgg16.*300 px inputs only"):
        check_multi_scale("ssd300_vgg16", [256, 300])
    check_multi_scale("ssd300_vgg16", [])
    check_multi_scale("ssdlite320_mobilenet_v3_large", SIZES)
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        "model.name=ssd300_vgg16",
        "model.min_size=null",
        "model.max_size=null",
        "train.multi_scale=[256,300]",
    )
    with pytest.raises(ConfigError, match="train.multi_scale"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_multi_scale_is_a_checked_config_key() -> None:
    assert load_config(None, []).train.multi_scale == []
    assert load_config(None, ["train.multi_scale=[320,384]"]).train.multi_scale == [320, 384]
    for bad in ("[0]", "[320,-1]", "[320,100000]", "[big]"):
        with pytest.raises(ConfigError, match=r"train.multi_scale\["):
            load_config(None, [f"train.multi_scale={bad}"])


class SizeSpy(Hook):
    """Records the size each training batch reached the backbone at, and the model's size at validation
    and after each epoch."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, tuple]] = []
        self.validated: list[tuple] = []
        self.after_epochs: list[tuple] = []

    def before_train(self, run) -> None:
        evaluate = run.evaluate

        def spying(model):
            self.validated.append(input_size(model))
            return evaluate(model)

        run.evaluate = spying
        unwrap(run.model).backbone.register_forward_pre_hook(self.record)
        self.run = run

    def record(self, module, args) -> None:
        if module.training:  # validation runs another copy (EMA) or this one in eval mode
            self.steps.append((self.run.epoch, self.run.step, tuple(args[0].shape[-2:])))

    def after_epoch(self, run) -> None:
        self.after_epochs.append(input_size(run.model))


def test_training_steps_use_the_drawn_sizes_and_validation_the_configured_one(tiny_data, tmp_path) -> None:
    spy, out = SizeSpy(), tmp_path / "run"
    seed = 3
    chosen = MultiScale(SIZES, seed=seed)
    assert chosen.size_for(0, 0) != chosen.size_for(0, 1)  # the run below really changes size
    cfg = tiny_config(tiny_data, out, f"train.multi_scale={SIZES}", f"train.seed={seed}")
    train(cfg, progress=False, hooks=[spy])
    configured = ((128,), 128, (128, 128))
    assert spy.steps == [(0, 0, (chosen.size_for(0, 0),) * 2), (0, 1, (chosen.size_for(0, 1),) * 2)]
    assert spy.validated == [configured] and spy.after_epochs == [configured]
    for name in ("best.pt", "last.pt"):
        model, meta = load_detector(out / "checkpoints" / name)
        assert input_size(model) == configured and meta["config"]["train"]["multi_scale"] == SIZES


@pytest.mark.slow
def test_resume_repeats_the_sizes_exactly(tiny_data, tmp_path) -> None:
    """1 epoch, then resume to 2, equals 2 epochs straight, with multi-scale on."""
    extra = ["train.multi_scale=[96,128,160]", *RESUME_OVERRIDES]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(tiny_data, straight, "train.epochs=2", *extra), progress=False)
    train(tiny_config(tiny_data, resumed, "train.epochs=1", *extra), progress=False)
    spy = SizeSpy()
    train(tiny_config(tiny_data, resumed, "train.epochs=2", "train.resume=auto", *extra), progress=False, hooks=[spy])
    chosen = MultiScale(SIZES, seed=0)
    assert spy.steps == [(1, step, (chosen.size_for(1, step),) * 2) for step in (0, 1)]
    _assert_same_training(straight, resumed)


def test_slice_crops_and_multi_scale_train_together(tiny_data, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, out, "augment.crop_size=64", "augment.preset=strong", "train.multi_scale=[96,160]")
    train(cfg, progress=False)
    model, meta = load_detector(out / "checkpoints" / "last.pt")
    assert meta["epoch"] == 1 and meta["config"]["augment"]["crop_size"] == 64
    assert input_size(model) == ((128,), 128, (128, 128))
