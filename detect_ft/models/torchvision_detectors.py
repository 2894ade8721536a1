"""torchvision's detectors: their backbone families and their registrations.

The builders are torchvision's own (``weights``, ``weights_backbone``, ``num_classes``); each is registered
here with its COCO and ImageNet weights and its figures. ``trainable_backbone_layers`` keeps torchvision's
meaning: the backbone body is cut into stages (ResNet: conv1, layer1..layer4; MobileNetV3 and VGG: the
blocks between strided layers), and only the last ``n`` stages (nearest the heads) train.

COCO box mAP and parameter counts in the figures are torchvision's published metadata of the COCO weights
(tests/test_model_zoo.py checks them against it); latency is what ``tools/model_table.py`` measured (see the
README for the machine and date).
"""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, VGG16_Weights
from torchvision.models import detection as tvd

from detect_ft.models.registry import (
    CLS_LOGITS_HEAD,
    RCNN_HEAD,
    SSD_HEAD,
    SSDLITE_HEAD,
    ModelFigures,
    register_family,
    register_model,
)


def resnet_fpn_stages(model: nn.Module) -> list[list[nn.Module]]:
    """ResNet's stem (conv1, bn1), then layer1..layer4."""
    body = model.backbone.body
    return [[body.conv1, body.bn1], [body.layer1], [body.layer2], [body.layer3], [body.layer4]]


def mobilenet_fpn_stages(model: nn.Module) -> list[list[nn.Module]]:
    """The MobileNetV3 body's blocks, cut before each strided block (see :func:`_split_at`)."""
    blocks = list(model.backbone.body.children())
    return _split_at(blocks, _strided_flags(blocks))


def ssdlite_stages(model: nn.Module) -> list[list[nn.Module]]:
    """SSDlite's MobileNetV3 blocks, cut before each strided block (see :func:`_split_at`)."""
    # torchvision split the MobileNetV3 block at C4 in two: features[0] ends with its first half,
    # features[1] starts with the rest, so the block counts once, as a strided block.
    head_part, tail_part = model.backbone.features
    blocks = list(head_part)[:-1] + [[head_part[-1], tail_part[0]]] + list(tail_part)[1:]
    strided = _strided_flags(head_part[:-1]) + [True] + _strided_flags(list(tail_part)[1:])
    return _split_at(blocks, strided)


def vgg_stages(model: nn.Module) -> list[list[nn.Module]]:
    """SSD300's VGG16 layers, cut before each max-pool."""
    # Stages start at each max-pool, as in torchvision's _vgg_extractor; the layers from maxpool4 on
    # moved into extra[0], before its new fc6/fc7 block, and maxpool5 (never a stage start) is gone.
    layers = list(model.backbone.features) + list(model.backbone.extra[0])[:-1]
    starts = [0] + [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    bounds = starts + [len(layers)]
    return [layers[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _strided_flags(blocks) -> list[bool]:
    """Whether each MobileNetV3 block is one torchvision marks as strided (``_is_cn``)."""
    return [bool(getattr(b, "_is_cn", False)) for b in blocks]


def _split_at(blocks: list, strided: list[bool]) -> list[list[nn.Module]]:
    """Stages as torchvision counts them: block 0, each strided block onward, and the last block alone."""
    starts = [0] + [i for i, s in enumerate(strided) if s and i > 0] + [len(blocks) - 1]
    bounds = starts + [len(blocks)]
    stages = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        stage: list[nn.Module] = []
        for block in blocks[a:b]:
            stage.extend(block if isinstance(block, list) else [block])
        stages.append(stage)
    return stages


# stage counts: tests/test_config.py checks them against a meta-device build of every registered model
register_family("resnet_fpn", stages=resnet_fpn_stages, stage_count=5)
register_family("mobilenet_fpn", stages=mobilenet_fpn_stages, stage_count=6)
register_family("ssdlite", stages=ssdlite_stages, stage_count=6)
register_family("vgg", stages=vgg_stages, stage_count=5)

register_model(
    "ssdlite320_mobilenet_v3_large",
    builder=tvd.ssdlite320_mobilenet_v3_large,
    coco_weights=tvd.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
    backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    family="ssdlite",
    head_pattern=SSDLITE_HEAD,
    head_layout="anchors",
    default_trainable=6,
    frozen_bn=False,
    fixed_size=True,
    description="SSDlite 320x320, MobileNetV3-Large: fastest, for CPUs and edge devices",
    figures=ModelFigures(coco_map=21.3, params_m=3.4, latency_ms=34),
)
register_model(
    "ssd300_vgg16",
    builder=tvd.ssd300_vgg16,
    coco_weights=tvd.SSD300_VGG16_Weights.COCO_V1,
    backbone_weights=VGG16_Weights.IMAGENET1K_FEATURES,
    family="vgg",
    head_pattern=SSD_HEAD,
    head_layout="anchors",
    default_trainable=4,
    frozen_bn=False,
    fixed_size=True,
    fixed_side=300,
    description="SSD 300x300, VGG16: the classic single-shot detector",
    figures=ModelFigures(coco_map=25.1, params_m=35.6, latency_ms=273),
)
register_model(
    "fasterrcnn_resnet50_fpn",
    builder=tvd.fasterrcnn_resnet50_fpn,
    coco_weights=tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
    backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
    family="resnet_fpn",
    head_pattern=RCNN_HEAD,
    head_layout="rcnn",
    default_trainable=3,
    frozen_bn=True,
    description="Faster R-CNN, ResNet50-FPN: accurate two-stage baseline",
    figures=ModelFigures(coco_map=37.0, params_m=41.8, latency_ms=1930),
)
register_model(
    "fasterrcnn_resnet50_fpn_v2",
    builder=tvd.fasterrcnn_resnet50_fpn_v2,
    coco_weights=tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
    family="resnet_fpn",
    head_pattern=RCNN_HEAD,
    head_layout="rcnn",
    default_trainable=3,
    frozen_bn=False,
    description="Faster R-CNN v2, ResNet50-FPN: the most accurate model here",
    figures=ModelFigures(coco_map=46.7, params_m=43.7, latency_ms=2975),
)
register_model(
    "fasterrcnn_mobilenet_v3_large_fpn",
    builder=tvd.fasterrcnn_mobilenet_v3_large_fpn,
    coco_weights=tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    family="mobilenet_fpn",
    head_pattern=RCNN_HEAD,
    head_layout="rcnn",
    default_trainable=3,
    frozen_bn=True,
    description="Faster R-CNN, MobileNetV3-Large FPN: two-stage, light",
    figures=ModelFigures(coco_map=32.8, params_m=19.4, latency_ms=461),
)
register_model(
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    builder=tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
    coco_weights=tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    family="mobilenet_fpn",
    head_pattern=RCNN_HEAD,
    head_layout="rcnn",
    default_trainable=3,
    frozen_bn=True,
    description="Faster R-CNN, MobileNetV3-Large FPN at 320 px: two-stage for CPUs",
    figures=ModelFigures(coco_map=22.8, params_m=19.4, latency_ms=71),
)
register_model(
    "retinanet_resnet50_fpn_v2",
    builder=tvd.retinanet_resnet50_fpn_v2,
    coco_weights=tvd.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
    backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
    family="resnet_fpn",
    head_pattern=CLS_LOGITS_HEAD,
    head_layout="anchors",
    default_trainable=3,
    frozen_bn=False,
    sigmoid_head=True,
    description="RetinaNet v2, ResNet50-FPN: one-stage with focal loss",
    figures=ModelFigures(coco_map=41.5, params_m=38.2, latency_ms=1728),
)
register_model(
    "fcos_resnet50_fpn",
    builder=tvd.fcos_resnet50_fpn,
    coco_weights=tvd.FCOS_ResNet50_FPN_Weights.COCO_V1,
    backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
    family="resnet_fpn",
    head_pattern=CLS_LOGITS_HEAD,
    head_layout="anchors",
    default_trainable=3,
    frozen_bn=True,
    sigmoid_head=True,
    anchor_free=True,
    description="FCOS, ResNet50-FPN: anchor-free one-stage",
    figures=ModelFigures(coco_map=39.2, params_m=32.3, latency_ms=1308),
)
