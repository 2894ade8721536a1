"""The model registry: ``register_model`` beside each builder puts one :class:`ModelSpec` into ``MODELS``.

A model is its builder plus one :func:`register_model` call next to it, which carries everything the rest
of the code asks about: where its pretrained weights come from, its backbone family (registered once per
family with :func:`register_family`: how the backbone is cut into stages for ``trainable_backbone_layers``
and how its BatchNorm freezes), the class-dependent tensors that get new shapes for the user's classes, its
capabilities (``fixed_size``, ``sigmoid_head``, ...) and its figures for the README table and ``detect-ft
models`` (:class:`ModelFigures`). ``MODELS``, :func:`list_models`, the README table and ``detect-ft models``
all list the registrations, in registration order.

This module imports no builder. The builder modules (:mod:`~detect_ft.models.torchvision_detectors`,
:mod:`~detect_ft.models.timm_detectors`) import it and register when they are imported, which
``detect_ft/models/__init__.py`` does; so ``MODELS`` is complete once any part of the package is imported.

Everything in a detector but its class-dependent tensors is class-agnostic and is loaded bit-identical from
the pretrained weights. New (class-dependent) tensors per architecture; ``A`` = anchors per location,
``C = K + 1``:

| model | new tensors | row layout |
| --- | --- | --- |
| ssdlite320_* | ``head.classification_head.module_list.{i}.1`` (1x1 conv after the depthwise conv, 6 levels) | ``a * C + c`` |
| ssd300_vgg16 | ``head.classification_head.module_list.{i}`` (3x3 conv, 6 levels) | ``a * C + c`` |
| fasterrcnn_* | ``roi_heads.box_predictor.cls_score`` (Linear) and ``roi_heads.box_predictor.bbox_pred`` (per-class box deltas) | ``c`` / ``4c..4c+3`` |
| retinanet_* | ``head.classification_head.cls_logits`` (3x3 conv; box regression stays) | ``a * C + c`` |
| fcos_* | ``head.classification_head.cls_logits`` (3x3 conv; box, centerness stay) | ``a * C + c`` |

RetinaNet and FCOS score each column with a sigmoid (``sigmoid_head``); their background column 0 is
fixed at score 0 (see ``build._silence_background_column``) so that they, like the softmax models, only
ever predict 1..K.

Models with a ``timm_backbone`` are built on that timm model (``model.backbone`` names another one, no
code needed); their ImageNet weights come from :mod:`detect_ft.models.timm_backbone`. Their ``recipe``
holds the training settings that suit a pretrained backbone, used for every config key the user leaves
unset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

if TYPE_CHECKING:
    import torch.nn as nn
    from torchvision.models._api import WeightsEnum

# head_pattern of the heads the registered models share (the table in the module docstring)
SSDLITE_HEAD = r"head\.classification_head\.module_list\.\d+\.1\.(weight|bias)"
SSD_HEAD = r"head\.classification_head\.module_list\.\d+\.(weight|bias)"
RCNN_HEAD = r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)"
CLS_LOGITS_HEAD = r"head\.classification_head\.cls_logits\.(weight|bias)"

Builder = TypeVar("Builder", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class ModelFigures:
    """A model's row in the README table and in ``detect-ft models``.

    Attributes:
        coco_map: COCO val2017 box mAP of its COCO weights (torchvision's published figure); None without
            COCO weights.
        params_m: parameters in millions (torchvision's figure for the COCO weights, else counted on the
            model built for 80 classes).
        latency_ms: batch-1 eager PyTorch inference on 2 CPU threads, as ``tools/model_table.py`` measures it.
        note: the mAP column's text for a model without ``coco_map``.
    """

    coco_map: Optional[float]
    params_m: float
    latency_ms: int
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class BackboneFamily:
    """What a backbone family does for fine-tuning, the same for every model of the family.

    Attributes:
        name: the ``family`` the models' specs name.
        stages: ``stages(model)`` returns the backbone body's stages, input side first, each a list of
            modules (``trainable_backbone_layers`` trains the last ``n``).
        stage_count: how many stages every model of the family has, known without building one; None when
            it depends on the model (then counted from its timm backbone, or on a meta-device build).
        freeze_batchnorm: ``freeze_batchnorm(model)`` freezes the backbone's BatchNorm in place; None:
            every ``BatchNorm2d`` of the stages becomes a ``FrozenBatchNorm2d``.
    """

    name: str
    stages: Callable[[nn.Module], list[list[nn.Module]]]
    stage_count: Optional[int] = None
    freeze_batchnorm: Optional[Callable[[nn.Module], None]] = None


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """How to build one registered detector.

    Attributes:
        builder: torchvision builder taking ``weights``, ``weights_backbone``, ``num_classes``; or, with
            ``timm_backbone``, a builder taking ``backbone`` (a timm model name) and ``num_classes``.
        family: a registered :class:`BackboneFamily` name (``resnet_fpn``, ``mobilenet_fpn``, ``ssdlite``,
            ``vgg``, ``timm``).
        head_pattern: regex matching the state-dict keys of class-dependent tensors.
        head_layout: ``anchors`` (rows ``a*C + c``) or ``rcnn`` (classifier rows ``c``, box rows ``4c..``).
        default_trainable: trainable backbone stages by default with pretrained weights.
        frozen_bn: whether backbone BatchNorm is frozen by default when the backbone is pretrained.
        description: one line for ``detect-ft models``.
        figures: its row in the README table and ``detect-ft models``.
        coco_weights: torchvision's COCO weights for the full detector (None: none exist).
        backbone_weights: torchvision's ImageNet weights for ``weights_backbone`` (torchvision models).
        timm_backbone: the default timm backbone (timm models only).
        fixed_size: takes a fixed square input instead of min/max sizes (SSD-style).
        fixed_side: the only square side it accepts (SSD300's default boxes use fixed pixel steps).
        sigmoid_head: scores each class column with a sigmoid, background column included.
        anchor_free: places no anchors to fit (FCOS predicts boxes from feature-map points), so
            ``model.anchors`` does not apply.
        recipe: ``(config key, value)`` pairs used where the user's config leaves the key unset.
    """

    builder: Callable[..., nn.Module]
    family: str
    head_pattern: str
    head_layout: str
    default_trainable: int
    frozen_bn: bool
    description: str
    figures: ModelFigures
    coco_weights: Optional[WeightsEnum] = None
    backbone_weights: Optional[WeightsEnum] = None
    timm_backbone: Optional[str] = None
    fixed_size: bool = False
    fixed_side: Optional[int] = None
    sigmoid_head: bool = False
    anchor_free: bool = False
    recipe: tuple[tuple[str, Any], ...] = ()

    @property
    def backbone_family(self) -> BackboneFamily:
        return FAMILIES[self.family]

    def is_head_key(self, key: str) -> bool:
        return re.fullmatch(self.head_pattern, key) is not None

    def postprocessor(self, model: nn.Module) -> nn.Module:
        """The module of ``model`` holding ``score_thresh`` and ``detections_per_img``: the R-CNNs' RoI
        heads, the model itself otherwise."""
        return model.roi_heads if self.head_layout == "rcnn" else model

    def num_head_columns(self, model: nn.Module) -> int:
        """C = K + 1, the classifier's outputs per location (or per RoI) of ``model``."""
        if self.head_layout == "rcnn":
            return model.roi_heads.box_predictor.cls_score.out_features
        head = model.head.classification_head
        # torchvision's sigmoid heads (RetinaNet, FCOS) call it num_classes, its SSD scoring heads num_columns
        return head.num_classes if self.sigmoid_head else head.num_columns


FAMILIES: dict[str, BackboneFamily] = {}
MODELS: dict[str, ModelSpec] = {}


def register_family(
    name: str,
    *,
    stages: Callable[[nn.Module], list[list[nn.Module]]],
    stage_count: Optional[int] = None,
    freeze_batchnorm: Optional[Callable[[nn.Module], None]] = None,
) -> BackboneFamily:
    """Register backbone family ``name`` (once, beside the builders of its models); see
    :class:`BackboneFamily` for the arguments.

    Raises:
        ValueError: a family of that name is registered already.
    """
    if name in FAMILIES:
        raise ValueError(f"backbone family {name!r} is registered already; register each family once")
    FAMILIES[name] = BackboneFamily(
        name=name, stages=stages, stage_count=stage_count, freeze_batchnorm=freeze_batchnorm
    )
    return FAMILIES[name]


def register_model(name: str, *, builder: Optional[Builder] = None, **spec: Any) -> Any:
    """Register detector ``name``: ``spec`` holds the :class:`ModelSpec` fields other than ``builder``.

    With ``builder`` it registers at once; without, it returns a decorator that registers the function it
    decorates as the builder (as timm's ``@register_model``). Either way the builder comes back unchanged.

    Raises:
        ValueError: ``name`` is registered already, or its ``family`` is not.
        TypeError: a ModelSpec field is missing or unknown.
    """

    def register(function: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(
                f"model {name!r} is registered already; pick a new name (or unregister_model({name!r}) first)"
            )
        if spec.get("family") not in FAMILIES:
            raise ValueError(
                f"model {name!r}: unknown backbone family {spec.get('family')!r}; registered: "
                f"{', '.join(FAMILIES)} (register_family adds one)"
            )
        MODELS[name] = ModelSpec(builder=function, **spec)
        return function

    return register if builder is None else register(builder)


def unregister_model(name: str) -> ModelSpec:
    """Remove model ``name`` from the registry and return its spec (KeyError when it is not registered)."""
    return MODELS.pop(name)


def list_models() -> list[str]:
    """Names accepted by :func:`detect_ft.models.build_model`, in registration order."""
    return list(MODELS)
