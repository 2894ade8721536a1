"""The model registry: a plain dict from name to :class:`ModelSpec`.

Each spec names the torchvision builder, its COCO and ImageNet-backbone weights, the backbone family
(which decides how ``trainable_backbone_layers`` maps onto modules) and the class-dependent tensors that
get new shapes for the user's classes. Everything else in a detector is class-agnostic and is loaded
bit-identical from the pretrained weights.

New (class-dependent) tensors per architecture; ``A`` = anchors per location, ``C = K + 1``:

| model | new tensors | row layout |
| --- | --- | --- |
| ssdlite320_mobilenet_v3_large | ``head.classification_head.module_list.{i}.1`` (1x1 conv after the depthwise conv, 6 levels) | ``a * C + c`` |
| ssd300_vgg16 | ``head.classification_head.module_list.{i}`` (3x3 conv, 6 levels) | ``a * C + c`` |
| fasterrcnn_* | ``roi_heads.box_predictor.cls_score`` (Linear) and ``roi_heads.box_predictor.bbox_pred`` (per-class box deltas) | ``c`` / ``4c..4c+3`` |
| retinanet_resnet50_fpn_v2 | ``head.classification_head.cls_logits`` (3x3 conv; box regression stays) | ``a * C + c`` |
| fcos_resnet50_fpn | ``head.classification_head.cls_logits`` (3x3 conv; box, centerness stay) | ``a * C + c`` |

RetinaNet and FCOS score each column with a sigmoid; their background column 0 is fixed at score 0 (see
``build._silence_background_column``) so that they, like the softmax models, only ever predict 1..K.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn
from torchvision.models import ResNet50_Weights, VGG16_Weights, MobileNet_V3_Large_Weights
from torchvision.models import detection as tvd
from torchvision.models._api import WeightsEnum


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered detector.

    Attributes:
        builder: torchvision builder taking ``weights``, ``weights_backbone``, ``num_classes``.
        coco_weights: torchvision's default COCO weights for the full detector.
        backbone_weights: the ImageNet weights the builder accepts as ``weights_backbone``.
        family: ``resnet_fpn`` | ``mobilenet_fpn`` | ``ssdlite`` | ``vgg`` (see finetune.backbone_stages).
        head_pattern: regex matching the state-dict keys of class-dependent tensors.
        head_layout: ``anchors`` (rows ``a*C + c``) or ``rcnn`` (classifier rows ``c``, box rows ``4c..``).
        default_trainable: torchvision's default trainable backbone stages for pretrained weights.
        frozen_bn: whether torchvision freezes BatchNorm when the backbone is pretrained.
        fixed_size: SSD-style models take a fixed square input instead of min/max sizes.
        description: one line for ``detect-ft models``.
    """

    builder: Callable[..., nn.Module]
    coco_weights: WeightsEnum
    backbone_weights: WeightsEnum
    family: str
    head_pattern: str
    head_layout: str
    default_trainable: int
    frozen_bn: bool
    fixed_size: bool
    description: str

    def is_head_key(self, key: str) -> bool:
        return re.fullmatch(self.head_pattern, key) is not None


_RCNN_HEAD = r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)"
_CLS_LOGITS = r"head\.classification_head\.cls_logits\.(weight|bias)"

MODELS: dict[str, ModelSpec] = {
    "ssdlite320_mobilenet_v3_large": ModelSpec(
        tvd.ssdlite320_mobilenet_v3_large,
        tvd.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        "ssdlite",
        r"head\.classification_head\.module_list\.\d+\.1\.(weight|bias)",
        "anchors",
        6,
        False,
        True,
        "SSDlite 320x320, MobileNetV3-Large: fastest, for CPUs and edge devices",
    ),
    "ssd300_vgg16": ModelSpec(
        tvd.ssd300_vgg16,
        tvd.SSD300_VGG16_Weights.COCO_V1,
        VGG16_Weights.IMAGENET1K_FEATURES,
        "vgg",
        r"head\.classification_head\.module_list\.\d+\.(weight|bias)",
        "anchors",
        4,
        False,
        True,
        "SSD 300x300, VGG16: the classic single-shot detector",
    ),
    "fasterrcnn_resnet50_fpn": ModelSpec(
        tvd.fasterrcnn_resnet50_fpn,
        tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
        ResNet50_Weights.IMAGENET1K_V1,
        "resnet_fpn",
        _RCNN_HEAD,
        "rcnn",
        3,
        True,
        False,
        "Faster R-CNN, ResNet50-FPN: accurate two-stage baseline",
    ),
    "fasterrcnn_resnet50_fpn_v2": ModelSpec(
        tvd.fasterrcnn_resnet50_fpn_v2,
        tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        ResNet50_Weights.IMAGENET1K_V1,
        "resnet_fpn",
        _RCNN_HEAD,
        "rcnn",
        3,
        False,
        False,
        "Faster R-CNN v2, ResNet50-FPN: the most accurate model here",
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": ModelSpec(
        tvd.fasterrcnn_mobilenet_v3_large_fpn,
        tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        "mobilenet_fpn",
        _RCNN_HEAD,
        "rcnn",
        3,
        True,
        False,
        "Faster R-CNN, MobileNetV3-Large FPN: two-stage, light",
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ModelSpec(
        tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
        tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        "mobilenet_fpn",
        _RCNN_HEAD,
        "rcnn",
        3,
        True,
        False,
        "Faster R-CNN, MobileNetV3-Large FPN at 320 px: two-stage for CPUs",
    ),
    "retinanet_resnet50_fpn_v2": ModelSpec(
        tvd.retinanet_resnet50_fpn_v2,
        tvd.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
        ResNet50_Weights.IMAGENET1K_V1,
        "resnet_fpn",
        _CLS_LOGITS,
        "anchors",
        3,
        False,
        False,
        "RetinaNet v2, ResNet50-FPN: one-stage with focal loss",
    ),
    "fcos_resnet50_fpn": ModelSpec(
        tvd.fcos_resnet50_fpn,
        tvd.FCOS_ResNet50_FPN_Weights.COCO_V1,
        ResNet50_Weights.IMAGENET1K_V1,
        "resnet_fpn",
        _CLS_LOGITS,
        "anchors",
        3,
        True,
        False,
        "FCOS, ResNet50-FPN: anchor-free one-stage",
    ),
}


def list_models() -> list[str]:
    """Names accepted by :func:`detect_ft.models.build_model`, in registry order."""
    return list(MODELS)


def coco_category_names() -> list[str]:
    """torchvision's 91 COCO slots: index 0 is ``__background__``, unused ids are ``N/A``."""
    return list(tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
