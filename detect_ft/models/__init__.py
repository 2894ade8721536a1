"""Model zoo: torchvision detectors with new class heads for the user's classes.

Label convention: user classes are 1..K, 0 is background, in every model.

A model is registered by one :func:`register_model` call beside its builder (see
:mod:`detect_ft.models.registry`); the builder modules below register theirs when imported, so every name
of ``MODELS`` is there once this package is imported.
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
from detect_ft.models.registry import (
    FAMILIES,
    MODELS,
    BackboneFamily,
    ModelFigures,
    ModelSpec,
    list_models,
    register_family,
    register_model,
    unregister_model,
)
from detect_ft.models.weights import coco_category_names

# isort: off
# The builder modules register their models on import, in this order: the order of list_models(), the
# README table and `detect-ft models`. A new builder module is imported here.
from detect_ft.models import torchvision_detectors  # noqa: F401
from detect_ft.models import timm_detectors  # noqa: F401
# isort: on

__all__ = [
    "FAMILIES",
    "MODELS",
    "BackboneFamily",
    "ModelFigures",
    "ModelSpec",
    "build_model",
    "coco_category_names",
    "input_normalisation",
    "list_models",
    "load_detector",
    "load_pretrained",
    "num_backbone_stages",
    "parameter_groups",
    "register_family",
    "register_model",
    "set_input_normalisation",
    "set_trainable_backbone_layers",
    "unregister_model",
]
