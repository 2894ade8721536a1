"""How many backbone stages a registered model has, known without building its weights.

The config check needs the number to bound ``model.trainable_backbone_layers`` before any work starts.
A family with a fixed count registers it (``BackboneFamily.stage_count``, the number of stages its
``stages`` callable returns); a timm model's count is that of its timm backbone; any other model is
counted once by building it on PyTorch's ``meta`` device (no memory for weights, no download). Counts are
cached per registration (the spec), so a name registered anew is counted anew.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from detect_ft.models.finetune import backbone_stages
from detect_ft.models.registry import MODELS, ModelSpec
from detect_ft.models.timm_backbone import body_stages, create_body


def backbone_stage_count(name: str, backbone: Optional[str] = None) -> Optional[int]:
    """The number of backbone stages of registered model ``name`` (on timm ``backbone``, for the timm
    models); None when it cannot be told."""
    spec = MODELS.get(name)
    if spec is None:
        return None
    if spec.backbone_family.stage_count is not None:
        return spec.backbone_family.stage_count
    if spec.timm_backbone:
        return timm_stage_count(backbone or spec.timm_backbone)
    return _count_on_meta_device(spec)


@functools.lru_cache(maxsize=None)
def timm_stage_count(backbone: str) -> Optional[int]:
    """Feature stages of timm model ``backbone``, built on the meta device (shapes only)."""
    try:
        with torch.device("meta"):
            return len(body_stages(create_body(backbone)))
    except Exception:  # an unknown name is model.backbone's own check
        return None


def count_on_meta_device(name: str) -> Optional[int]:
    """Build model ``name`` on the meta device (shapes only) and count its backbone stages."""
    return _count_on_meta_device(MODELS[name])


@functools.lru_cache(maxsize=None)
def _count_on_meta_device(spec: ModelSpec) -> Optional[int]:
    try:
        with torch.device("meta"):
            if spec.timm_backbone:
                model = spec.builder(backbone=spec.timm_backbone, num_classes=2)
            else:
                model = spec.builder(weights=None, weights_backbone=None, num_classes=2)
        return len(backbone_stages(model, spec.family))
    except Exception:  # a builder that cannot run on meta: the build itself checks the value later
        return None
