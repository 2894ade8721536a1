"""How many backbone stages a registered model has, known without building its weights.

The config check needs the number to bound ``model.trainable_backbone_layers`` before any work starts.
The known families have a fixed count (the stages :func:`detect_ft.models.finetune.backbone_stages`
returns); a family not listed here is counted once by building the model on PyTorch's ``meta`` device
(no memory for weights, no download), and the answer is cached per model name.
"""

from __future__ import annotations

import functools
from typing import Optional

# stages per backbone family, as finetune.backbone_stages counts them (tests/test_config.py checks
# these against a meta-device build of every registered model)
STAGES_PER_FAMILY: dict[str, int] = {"resnet_fpn": 5, "mobilenet_fpn": 6, "ssdlite": 6, "vgg": 5}


@functools.lru_cache(maxsize=None)
def backbone_stage_count(name: str, backbone: Optional[str] = None) -> Optional[int]:
    """The number of backbone stages of registered model ``name`` (on timm ``backbone``, for the timm
    models); None when it cannot be told."""
    from detect_ft.models.registry import MODELS

    spec = MODELS.get(name)
    if spec is None:
        return None
    if spec.family in STAGES_PER_FAMILY:
        return STAGES_PER_FAMILY[spec.family]
    if spec.timm_backbone:
        return timm_stage_count(backbone or spec.timm_backbone)
    return count_on_meta_device(name)


def timm_stage_count(backbone: str) -> Optional[int]:
    """Feature stages of timm model ``backbone``, built on the meta device (shapes only)."""
    import torch

    from detect_ft.models.timm_backbone import body_stages, create_body

    try:
        with torch.device("meta"):
            return len(body_stages(create_body(backbone)))
    except Exception:  # an unknown name is model.backbone's own check
        return None


def count_on_meta_device(name: str) -> Optional[int]:
    """Build model ``name`` on the meta device (shapes only) and count its backbone stages."""
    import torch

    from detect_ft.models.finetune import backbone_stages
    from detect_ft.models.registry import MODELS

    spec = MODELS[name]
    try:
        with torch.device("meta"):
            if spec.timm_backbone:
                model = spec.builder(backbone=spec.timm_backbone, num_classes=2)
            else:
                model = spec.builder(weights=None, weights_backbone=None, num_classes=2)
        return len(backbone_stages(model, spec.family))
    except Exception:  # a builder that cannot run on meta: the build itself checks the value later
        return None
