"""Model zoo: every registered detector builds with new heads, trains a step, predicts labels 1..K, and
keeps every pretrained tensor bit-identical."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torchvision.models import detection as tvd
from torchvision.models._api import WeightsEnum

from detect_ft.models import (
    MODELS,
    ModelFigures,
    build_model,
    coco_category_names,
    list_models,
    load_detector,
    parameter_groups,
    register_family,
    register_model,
    set_trainable_backbone_layers,
    unregister_model,
)
from detect_ft.models.finetune import backbone_parameter_ids, num_backbone_stages
from detect_ft.models.registry import RCNN_HEAD
from detect_ft.models.stages import backbone_stage_count
from detect_ft.models.zoo import markdown_rows, zoo_table
from detect_ft.utils.errors import ConfigError, WeightsError


def small_options(name: str) -> dict:
    """Small inputs keep CPU steps fast; SSD300's default boxes only fit 300 px inputs."""
    if name == "ssd300_vgg16":
        return {}
    if MODELS[name].fixed_size:
        return {"min_size": 96}
    return {"min_size": 96, "max_size": 128}


def tiny_batch() -> tuple[list[torch.Tensor], list[dict]]:
    images = [torch.rand(3, 80, 100), torch.rand(3, 90, 70)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [5.0, 40.0, 30.0, 70.0]]), "labels": torch.tensor([2, 3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # a background image
    ]
    return images, targets


def random_detector_state(name: str, num_classes: int = 91) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return MODELS[name].builder(weights=None, weights_backbone=None, num_classes=num_classes).state_dict()


FAST_TIER = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")


@pytest.mark.parametrize(
    "name", [n if n in FAST_TIER else pytest.param(n, marks=pytest.mark.slow) for n in list_models()]
)
def test_every_model_trains_a_step_and_predicts_user_labels(name):
    torch.manual_seed(0)
    model = build_model(name, 3, weights="none", score_thresh=0.0, **small_options(name))
    spec = MODELS[name]
    assert spec.num_head_columns(model) == 4  # 3 classes + background, read where this family keeps it
    assert spec.postprocessor(model).score_thresh == 0.0
    images, targets = tiny_batch()
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    out = outputs[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["scores"]) == len(out["labels"]) > 0
    assert out["labels"].min() >= 1 and out["labels"].max() <= 3


@pytest.mark.parametrize(
    "name", ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn", "fcos_resnet50_fpn"]
)
def test_weights_file_keeps_every_non_head_tensor(tmp_path, name):
    source = random_detector_state(name, num_classes=91)
    path = tmp_path / "coco91.pth"
    torch.save(source, path)
    model = build_model(name, 3, weights=str(path), class_names=["a", "b", "c"])
    spec = MODELS[name]
    new_heads = 0
    for key, tensor in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in source:
            continue
        if spec.is_head_key(key):
            assert tensor.shape != source[key].shape, key
            new_heads += 1
        else:
            assert torch.equal(tensor, source[key]), key
    assert new_heads >= 2


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"])
def test_class_names_matching_coco_start_from_coco_rows(tmp_path, name):
    source = random_detector_state(name)
    torch.save(source, tmp_path / "w.pth")
    names = ["dog", "widget", "Traffic_Light"]
    coco = coco_category_names()
    rows = {1: coco.index("dog"), 3: coco.index("traffic light"), 0: 0}
    model = build_model(name, 3, weights=str(tmp_path / "w.pth"), class_names=names)
    off = build_model(name, 3, weights=str(tmp_path / "w.pth"), class_names=names, init_from_coco_names=False)
    state, state_off = model.state_dict(), off.state_dict()
    checked = 0
    for key in state:
        if not MODELS[name].is_head_key(key):
            continue
        per_class = 4 if "bbox_pred" in key else 1
        new, src = state[key], source[key]
        groups = 1 if MODELS[name].head_layout == "rcnn" else new.shape[0] // 4
        for g in range(groups):
            for i, j in rows.items():
                dst_rows = new[(g * 4 + i) * per_class : (g * 4 + i + 1) * per_class]
                src_rows = src[(g * 91 + j) * per_class : (g * 91 + j + 1) * per_class]
                assert torch.equal(dst_rows, src_rows), (key, g, i)
                checked += 1
            widget = (g * 4 + 2) * per_class
            if key.endswith("bias"):
                continue  # heads start with zero biases, equal whatever their origin
            assert not torch.equal(
                new[widget : widget + per_class], src[(g * 91 + 1) * per_class : (g * 91 + 2) * per_class]
            )
        # switched off: no row is taken from COCO
        assert key.endswith("bias") or not torch.equal(
            state_off[key][per_class : 2 * per_class],
            src[coco.index("dog") * per_class : (coco.index("dog") + 1) * per_class],
        )
    assert checked > 0


def test_detect_ft_checkpoint_transfers_rows_by_its_own_class_names(tmp_path):
    name = "ssdlite320_mobilenet_v3_large"
    first = build_model(name, 2, weights="none", class_names=["circle", "square"], min_size=96)
    torch.save(
        {"model": first.state_dict(), "model_name": name, "num_classes": 2, "class_names": ["circle", "square"]},
        tmp_path / "ckpt.pt",
    )
    second = build_model(name, 2, weights=str(tmp_path / "ckpt.pt"), class_names=["star", "square"], min_size=96)
    key = "head.classification_head.module_list.0.1.weight"
    a, b = first.state_dict()[key], second.state_dict()[key]
    assert torch.equal(a[2], b[2]) and torch.equal(a[0], b[0])  # anchor 0: square and background rows
    assert not torch.equal(a[1], b[1])  # star is new


def test_wrong_architecture_file_is_a_clear_error(tmp_path):
    torch.save(random_detector_state("ssdlite320_mobilenet_v3_large"), tmp_path / "ssdlite.pth")
    with pytest.raises(WeightsError, match="does not fit fasterrcnn_mobilenet_v3_large_320_fpn"):
        build_model("fasterrcnn_mobilenet_v3_large_320_fpn", 3, weights=str(tmp_path / "ssdlite.pth"))
    with pytest.raises(WeightsError, match="not found"):
        build_model("ssdlite320_mobilenet_v3_large", 3, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("yolov99", 3)


def test_coco_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    name = "ssdlite320_mobilenet_v3_large"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    source = random_detector_state(name)
    torch.save(source, checkpoints / Path(MODELS[name].coco_weights.url).name)
    model = build_model(name, 2, weights="coco", class_names=["person", "thing"])
    key = "backbone.features.0.0.0.weight"
    assert torch.equal(model.state_dict()[key], source[key])


def test_offline_without_cache_names_file_cache_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    for weights in ("coco", "imagenet"):
        with pytest.raises(WeightsError) as info:
            build_model("ssdlite320_mobilenet_v3_large", 2, weights=weights)
        message = str(info.value)
        assert ".pth" in message and str(tmp_path / "hub" / "checkpoints") in message and "model.weights=" in message


def _fake_imagenet(self, *args, **kwargs):
    """Random ImageNet backbone tensors so torchvision's pretrained build path runs offline."""
    return {
        "ResNet50_Weights": tvm.resnet50,
        "MobileNet_V3_Large_Weights": tvm.mobilenet_v3_large,
        "VGG16_Weights": tvm.vgg16,
    }[type(self).__name__]().state_dict()


@pytest.mark.parametrize(
    "name",
    [pytest.param("ssdlite320_mobilenet_v3_large", marks=pytest.mark.slow), "fasterrcnn_mobilenet_v3_large_320_fpn"],
)
def test_trainable_backbone_layers_match_torchvision(monkeypatch, name):
    monkeypatch.setattr(WeightsEnum, "get_state_dict", _fake_imagenet)
    spec = MODELS[name]
    for trainable in (0, 2, num_backbone_stages(build_model(name, 1, weights="none"), name)):
        reference = spec.builder(
            weights=None, weights_backbone=spec.backbone_weights, num_classes=4, trainable_backbone_layers=trainable
        )
        ours = build_model(name, 3, weights="none", trainable_backbone_layers=trainable)
        names = {k for k, _ in reference.named_parameters()} & {k for k, _ in ours.named_parameters()}
        frozen_ref = {k for k, p in reference.named_parameters() if not p.requires_grad and k in names}
        frozen_ours = {k for k, p in ours.named_parameters() if not p.requires_grad and k in names}
        assert frozen_ref == frozen_ours, trainable


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if MODELS[n].backbone_weights is not None])
def test_trainable_backbone_layers_match_torchvision_everywhere(monkeypatch, name):
    test_trainable_backbone_layers_match_torchvision(monkeypatch, name)


def test_imagenet_weights_build_through_torchvision(monkeypatch):
    monkeypatch.setattr(WeightsEnum, "get_state_dict", _fake_imagenet)
    model = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", 3, weights="imagenet")
    trainable = {k for k, p in model.named_parameters() if p.requires_grad and k.startswith("backbone.body")}
    assert trainable and not any(k.startswith("backbone.body.0.") for k in trainable)  # default: 3 stages


def test_parameter_groups_cover_each_parameter_once():
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    model = build_model(name, 3, weights="none")
    groups = parameter_groups(model, name, lr=0.01, weight_decay=1e-4, backbone_lr_mult=0.1)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    backbone = backbone_parameter_ids(model, name)
    for group in groups:
        in_backbone = group["name"].startswith("backbone")
        assert group["lr"] == pytest.approx(0.001 if in_backbone else 0.01)
        assert all((id(p) in backbone) == in_backbone for p in group["params"])
        if group["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in group["params"])
        else:
            assert all(p.ndim <= 1 for p in group["params"])


def test_freeze_then_unfreeze_backbone():
    name = "ssdlite320_mobilenet_v3_large"
    model = build_model(name, 2, weights="none")
    set_trainable_backbone_layers(model, name, 0)
    backbone = backbone_parameter_ids(model, name)
    assert not any(p.requires_grad for p in model.parameters() if id(p) in backbone)
    assert all(p.requires_grad for p in model.parameters() if id(p) not in backbone)
    set_trainable_backbone_layers(model, name, num_backbone_stages(model, name))
    assert all(p.requires_grad for p in model.parameters())


def test_load_detector_round_trip(tmp_path):
    from detect_ft.config.schema import Config, config_to_dict

    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    cfg = Config()
    cfg.model.name, cfg.model.min_size, cfg.model.max_size = name, 96, 128
    model = build_model(name, 2, weights="none", class_names=["a", "b"], frozen_bn=True, min_size=96, max_size=128)
    checkpoint = {
        "model": model.state_dict(),
        "model_name": name,
        "num_classes": 2,
        "class_names": ["a", "b"],
        "category_ids": [3, 7],
        "config": config_to_dict(cfg),
        "epoch": 4,
    }
    torch.save(checkpoint, tmp_path / "best.pt")
    loaded, meta = load_detector(tmp_path / "best.pt")
    assert meta["class_names"] == ["a", "b"] and meta["category_ids"] == [3, 7] and meta["epoch"] == 4
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
    image = [torch.rand(3, 100, 120)]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(image)[0]["boxes"], loaded(image)[0]["boxes"])
    with pytest.raises(WeightsError, match="not a detect-ft checkpoint"):
        torch.save(model.state_dict(), tmp_path / "bare.pt")
        load_detector(tmp_path / "bare.pt")


def tiny_input_options(name: str) -> dict:
    """The smallest inputs each model takes: the deepest feature maps come out 1x1."""
    if name == "ssd300_vgg16":
        return {}
    return {"min_size": 32} if MODELS[name].fixed_size else {"min_size": 32, "max_size": 32}


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_on_a_batch_of_one(name):
    """The last batch of an epoch can hold one image; BatchNorm on a 1x1 map of it must not stop the run."""
    from detect_ft.engine.fit import train_one_epoch
    from detect_ft.engine.run import Run, TrainOptions

    torch.manual_seed(0)
    model = build_model(name, 2, weights="none", **tiny_input_options(name))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    target = {"boxes": torch.tensor([[4.0, 6.0, 40.0, 44.0]]), "labels": torch.tensor([1])}
    run = Run(model=model, optimizer=optimizer, options=TrainOptions(progress=False))
    stats = train_one_epoch(run, [([torch.rand(3, 48, 48)], [target])])
    assert stats["steps"] == 1 and stats["images"] == 1 and stats["skipped_steps"] == 0
    assert torch.isfinite(torch.tensor(stats["loss"]))


TOY = "fasterrcnn_mobilenet_v3_large_160_fpn"


@pytest.fixture
def toy_model():
    """A new model of an existing family, added as the docs say: one register_model call and its builder."""

    @register_model(
        TOY,
        family="mobilenet_fpn",
        head_pattern=RCNN_HEAD,
        head_layout="rcnn",
        default_trainable=3,
        frozen_bn=True,
        description="Faster R-CNN, MobileNetV3-Large FPN at 160 px (registered by a test)",
        figures=ModelFigures(coco_map=None, params_m=19.4, latency_ms=25, note="no COCO weights"),
    )
    def fasterrcnn_mobilenet_v3_large_160_fpn(**kwargs) -> torch.nn.Module:
        return tvd.fasterrcnn_mobilenet_v3_large_fpn(min_size=160, max_size=160, **kwargs)

    yield TOY
    unregister_model(TOY)


def test_one_register_model_call_adds_a_model(toy_model):
    from detect_ft.config.schema import load_config

    assert list_models()[-1] == toy_model
    torch.manual_seed(0)
    model = build_model(toy_model, 2, weights="none", score_thresh=0.0)
    assert model.transform.min_size == (160,) and MODELS[toy_model].num_head_columns(model) == 3
    assert num_backbone_stages(model, toy_model) == backbone_stage_count(toy_model) == 6  # the family's
    set_trainable_backbone_layers(model, toy_model, 2)
    assert backbone_parameter_ids(model, toy_model) and any(p.requires_grad for p in model.backbone.body.parameters())
    images, targets = tiny_batch()
    model.train()
    assert all(
        torch.isfinite(v) for v in model(images, [{**t, "labels": t["labels"] % 2 + 1} for t in targets]).values()
    )
    assert f"| {toy_model} | - (no COCO weights) | 19.4 | 25 |" in markdown_rows()
    assert toy_model in zoo_table()
    assert load_config(None, [f"model.name={toy_model}", "model.weights=none"]).model.name == toy_model
    with pytest.raises(ConfigError, match=r"0\.\.6"):
        load_config(None, [f"model.name={toy_model}", "model.trainable_backbone_layers=7"])


def test_a_registered_name_or_family_is_refused_a_second_time():
    spec = MODELS["ssdlite320_mobilenet_v3_large"]
    fields = {f: getattr(spec, f) for f in spec.__dataclass_fields__ if f != "builder"}
    with pytest.raises(ValueError, match="'ssdlite320_mobilenet_v3_large' is registered already"):
        register_model("ssdlite320_mobilenet_v3_large", builder=tvd.ssdlite320_mobilenet_v3_large, **fields)
    assert MODELS["ssdlite320_mobilenet_v3_large"] is spec
    with pytest.raises(ValueError, match="unknown backbone family 'no_such_family'"):
        register_model("a_new_name", builder=spec.builder, **{**fields, "family": "no_such_family"})
    assert "a_new_name" not in MODELS
    with pytest.raises(ValueError, match="family 'ssdlite' is registered already"):
        register_family("ssdlite", stages=lambda model: [])
