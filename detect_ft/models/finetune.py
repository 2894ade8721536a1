"""Fine-tuning controls: trainable backbone stages, frozen BatchNorm, parameter groups.

``trainable_backbone_layers`` keeps torchvision's meaning: the backbone body is cut into stages (ResNet:
conv1, layer1..layer4; MobileNetV3 and VGG: the blocks between strided layers; timm: its feature stages),
and only the last ``n`` stages (nearest the heads) train. FPN, SSD extra layers and heads always train.
torchvision applies it only while building with pretrained weights; here it is applied after loading any
weights, and again by the trainer when it unfreezes the backbone. Each backbone family registers how its backbone is cut
(:func:`~detect_ft.models.registry.register_family`, beside its models' builders).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops.misc import FrozenBatchNorm2d

from detect_ft.models.registry import FAMILIES, MODELS


def backbone_stages(model: nn.Module, family: str) -> list[list[nn.Module]]:
    """The backbone body's stages, input side first; each stage is a list of modules (as the registered
    :class:`~detect_ft.models.registry.BackboneFamily` ``family`` cuts them)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}")
    return FAMILIES[family].stages(model)


def freeze_backbone_batchnorm(model: nn.Module, family: str) -> None:
    """Freeze the backbone's BatchNorm in place, as the registered ``family`` does (by default: each
    BatchNorm2d of its stages becomes a FrozenBatchNorm2d holding the same statistics)."""
    freeze = FAMILIES[family].freeze_batchnorm
    if freeze is not None:
        freeze(model)
        return
    for stage in backbone_stages(model, family):
        for module in stage:
            freeze_batchnorm(module)


def num_backbone_stages(model: nn.Module, model_name: str) -> int:
    return len(backbone_stages(model, MODELS[model_name].family))


def set_trainable_backbone_layers(model: nn.Module, model_name: str, trainable: int) -> None:
    """Let only the last ``trainable`` backbone stages train; 0 freezes the whole backbone body."""
    stages = backbone_stages(model, MODELS[model_name].family)
    if not 0 <= trainable <= len(stages):
        raise ValueError(f"trainable_backbone_layers must be in 0..{len(stages)} for {model_name}, got {trainable}")
    for index, stage in enumerate(stages):
        train = index >= len(stages) - trainable
        for module in stage:
            for parameter in module.parameters():
                parameter.requires_grad_(train)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d holding the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def backbone_parameter_ids(model: nn.Module, model_name: str) -> set[int]:
    stages = backbone_stages(model, MODELS[model_name].family)
    return {id(p) for stage in stages for module in stage for p in module.parameters()}


def parameter_groups(
    model: nn.Module, model_name: str, *, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0
) -> list[dict]:
    """Optimizer groups: backbone vs the rest (LR multiplier), and no weight decay on norms and biases.

    Every parameter appears in a group, also frozen ones, so that unfreezing later needs no new optimizer;
    frozen parameters simply receive no gradient.
    """
    backbone_ids = backbone_parameter_ids(model, model_name)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for parameter in model.parameters():
        no_decay = parameter.ndim <= 1  # biases and norm scales/shifts
        groups.setdefault((id(parameter) in backbone_ids, no_decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr": lr * (backbone_lr_mult if in_backbone else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": f"{'backbone' if in_backbone else 'heads'}{'_no_decay' if no_decay else ''}",
        }
        for (in_backbone, no_decay), params in sorted(groups.items())
    ]
