"""The model registry: a plain dict from name to :class:`ModelSpec`.

Each spec names the builder, where its pretrained weights come from, the backbone family (which decides
how ``trainable_backbone_layers`` maps onto modules), the class-dependent tensors that get new shapes for
the user's classes, and the capabilities the rest of the code asks about (``fixed_size``,
``sigmoid_head``). Everything else in a detector is class-agnostic and is loaded bit-identical from the
pretrained weights.

New (class-dependent) tensors per architecture; ``A`` = anchors per location, ``C = K + 1``:

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

Models with a ``timm_backbone`` are built by :mod:`detect_ft.models.timm_detectors` on that timm model
(``model.backbone`` names another one, no code needed); their ImageNet weights come from
:mod:`detect_ft.models.timm_backbone`. Their ``recipe`` holds the training settings that suit a
pretrained backbone, used for every config key the user leaves unset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch.nn as nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, VGG16_Weights
from torchvision.models import detection as tvd
from torchvision.models._api import WeightsEnum

from detect_ft.models import timm_detectors


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """How to build one registered detector.

    Attributes:
        builder: torchvision builder taking ``weights``, ``weights_backbone``, ``num_classes``; or, with
            ``timm_backbone``, a :mod:`~detect_ft.models.timm_detectors` builder taking ``backbone``,
            ``num_classes``.
        family: ``resnet_fpn`` | ``mobilenet_fpn`` | ``ssdlite`` | ``vgg`` | ``timm`` (see
            finetune.backbone_stages).
        head_pattern: regex matching the state-dict keys of class-dependent tensors.
        head_layout: ``anchors`` (rows ``a*C + c``) or ``rcnn`` (classifier rows ``c``, box rows ``4c..``).
        default_trainable: trainable backbone stages by default with pretrained weights.
        frozen_bn: whether backbone BatchNorm is frozen by default when the backbone is pretrained.
        description: one line for ``detect-ft models``.
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
    coco_weights: Optional[WeightsEnum] = None
    backbone_weights: Optional[WeightsEnum] = None
    timm_backbone: Optional[str] = None
    fixed_size: bool = False
    fixed_side: Optional[int] = None
    sigmoid_head: bool = False
    anchor_free: bool = False
    recipe: tuple[tuple[str, Any], ...] = ()

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


_SSDLITE_HEAD = r"head\.classification_head\.module_list\.\d+\.1\.(weight|bias)"
_RCNN_HEAD = r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)"
_CLS_LOGITS = r"head\.classification_head\.cls_logits\.(weight|bias)"

# Chosen with tools/finetune_suite.py on four real sets (docs/benchmarks.md, "Fine-tuning suite"): the
# backbone frozen for the first third of the run (a share, so it holds at any budget), then its last 3
# stages train at the heads' LR (all 5 cost twice the CPU time a step); the backbone at a tenth of the LR
# with nothing frozen (the earlier recipe) collapsed or lagged on the sets other than raccoon. Batch 8 at
# lr 0.002 beat batch 16 at 0.001 on each set screened (twice the optimizer steps in the same minutes, and a few
# hundred photos give few steps); lr 0.004 and a larger input did not pay.
_TIMM_RECIPE = (
    ("model.weights", "imagenet"),
    ("model.trainable_backbone_layers", 3),
    ("train.optimizer", "adamw"),
    ("train.lr", 0.002),
    ("train.weight_decay", 0.0001),
    ("train.backbone_lr_mult", 1.0),
    ("train.freeze_backbone_fraction", 0.33),
    ("train.batch_size", 8),
    ("train.channels_last", True),
)

MODELS: dict[str, ModelSpec] = {
    "ssdlite320_mobilenet_v3_large": ModelSpec(
        builder=tvd.ssdlite320_mobilenet_v3_large,
        coco_weights=tvd.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
        backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        family="ssdlite",
        head_pattern=_SSDLITE_HEAD,
        head_layout="anchors",
        default_trainable=6,
        frozen_bn=False,
        fixed_size=True,
        description="SSDlite 320x320, MobileNetV3-Large: fastest, for CPUs and edge devices",
    ),
    "ssd300_vgg16": ModelSpec(
        builder=tvd.ssd300_vgg16,
        coco_weights=tvd.SSD300_VGG16_Weights.COCO_V1,
        backbone_weights=VGG16_Weights.IMAGENET1K_FEATURES,
        family="vgg",
        head_pattern=r"head\.classification_head\.module_list\.\d+\.(weight|bias)",
        head_layout="anchors",
        default_trainable=4,
        frozen_bn=False,
        fixed_size=True,
        fixed_side=300,
        description="SSD 300x300, VGG16: the classic single-shot detector",
    ),
    "fasterrcnn_resnet50_fpn": ModelSpec(
        builder=tvd.fasterrcnn_resnet50_fpn,
        coco_weights=tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
        backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
        family="resnet_fpn",
        head_pattern=_RCNN_HEAD,
        head_layout="rcnn",
        default_trainable=3,
        frozen_bn=True,
        description="Faster R-CNN, ResNet50-FPN: accurate two-stage baseline",
    ),
    "fasterrcnn_resnet50_fpn_v2": ModelSpec(
        builder=tvd.fasterrcnn_resnet50_fpn_v2,
        coco_weights=tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
        family="resnet_fpn",
        head_pattern=_RCNN_HEAD,
        head_layout="rcnn",
        default_trainable=3,
        frozen_bn=False,
        description="Faster R-CNN v2, ResNet50-FPN: the most accurate model here",
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": ModelSpec(
        builder=tvd.fasterrcnn_mobilenet_v3_large_fpn,
        coco_weights=tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        family="mobilenet_fpn",
        head_pattern=_RCNN_HEAD,
        head_layout="rcnn",
        default_trainable=3,
        frozen_bn=True,
        description="Faster R-CNN, MobileNetV3-Large FPN: two-stage, light",
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ModelSpec(
        builder=tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
        coco_weights=tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
        backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        family="mobilenet_fpn",
        head_pattern=_RCNN_HEAD,
        head_layout="rcnn",
        default_trainable=3,
        frozen_bn=True,
        description="Faster R-CNN, MobileNetV3-Large FPN at 320 px: two-stage for CPUs",
    ),
    "retinanet_resnet50_fpn_v2": ModelSpec(
        builder=tvd.retinanet_resnet50_fpn_v2,
        coco_weights=tvd.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
        backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
        family="resnet_fpn",
        head_pattern=_CLS_LOGITS,
        head_layout="anchors",
        default_trainable=3,
        frozen_bn=False,
        sigmoid_head=True,
        description="RetinaNet v2, ResNet50-FPN: one-stage with focal loss",
    ),
    "fcos_resnet50_fpn": ModelSpec(
        builder=tvd.fcos_resnet50_fpn,
        coco_weights=tvd.FCOS_ResNet50_FPN_Weights.COCO_V1,
        backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
        family="resnet_fpn",
        head_pattern=_CLS_LOGITS,
        head_layout="anchors",
        default_trainable=3,
        frozen_bn=True,
        sigmoid_head=True,
        anchor_free=True,
        description="FCOS, ResNet50-FPN: anchor-free one-stage",
    ),
    "ssdlite320_efficientnet_lite0": ModelSpec(
        builder=timm_detectors.ssdlite_timm,
        timm_backbone="tf_efficientnet_lite0",
        family="timm",
        head_pattern=_SSDLITE_HEAD,
        head_layout="anchors",
        default_trainable=5,
        frozen_bn=False,
        fixed_size=True,
        recipe=_TIMM_RECIPE,
        description="SSDLite 320x320, EfficientNet-Lite0 (timm, ImageNet weights offline): fast, INT8-friendly",
    ),
    "fasterrcnn_efficientnet_lite0_fpn": ModelSpec(
        builder=timm_detectors.fasterrcnn_timm_fpn,
        timm_backbone="tf_efficientnet_lite0",
        family="timm",
        head_pattern=_RCNN_HEAD,
        head_layout="rcnn",
        default_trainable=3,
        frozen_bn=True,
        recipe=_TIMM_RECIPE,
        description="Faster R-CNN, EfficientNet-Lite0 FPN (timm, ImageNet weights offline), 512 px",
    ),
    "retinanet_efficientnet_lite0_fpn": ModelSpec(
        builder=timm_detectors.retinanet_timm_fpn,
        timm_backbone="tf_efficientnet_lite0",
        family="timm",
        head_pattern=_CLS_LOGITS,
        head_layout="anchors",
        default_trainable=3,
        frozen_bn=True,
        sigmoid_head=True,
        recipe=_TIMM_RECIPE,
        description="RetinaNet, EfficientNet-Lite0 FPN (timm, ImageNet weights offline), 512 px",
    ),
    "fcos_efficientnet_lite0_fpn": ModelSpec(
        builder=timm_detectors.fcos_timm_fpn,
        timm_backbone="tf_efficientnet_lite0",
        family="timm",
        head_pattern=_CLS_LOGITS,
        head_layout="anchors",
        default_trainable=3,
        frozen_bn=True,
        sigmoid_head=True,
        anchor_free=True,
        recipe=_TIMM_RECIPE,
        description="FCOS, EfficientNet-Lite0 FPN (timm, ImageNet weights offline), 512 px",
    ),
}


def list_models() -> list[str]:
    """Names accepted by :func:`detect_ft.models.build_model`, in registry order."""
    return list(MODELS)


def coco_category_names() -> list[str]:
    """torchvision's 91 COCO slots: index 0 is ``__background__``, unused ids are ``N/A``."""
    return list(tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
