"""Model zoo: torchvision detectors with new class heads for the user's classes.

Label convention: user classes are 1..K, 0 is background, in every model.
"""

from detect_ft.models.build import (
    build_model,
    input_normalisation,
    load_detector,
    load_pretrained,
    set_input_normalisation,
)
from detect_ft.models.finetune import (
    num_backbone_stages,
    parameter_groups,
    set_trainable_backbone_layers,
)
from detect_ft.models.registry import MODELS, ModelSpec, coco_category_names, list_models

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_model",
    "coco_category_names",
    "input_normalisation",
    "list_models",
    "load_detector",
    "load_pretrained",
    "num_backbone_stages",
    "parameter_groups",
    "set_input_normalisation",
    "set_trainable_backbone_layers",
]
