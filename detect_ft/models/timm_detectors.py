"""torchvision detector families on a timm backbone: SSDLite, Faster R-CNN, RetinaNet and FCOS.

Each builder takes the timm model name and ``num_classes`` (background included, as torchvision's
builders do) and returns the torchvision detector class, so training, evaluation and export treat them
like the torchvision models. The backbone module always exposes the timm feature body as
``model.backbone.body`` (see :mod:`detect_ft.models.timm_backbone` for its stages and weights); the
resize/normalise transform uses the backbone's pretraining mean and std.

| builder | levels read (strides) | neck | anchors |
| --- | --- | --- | --- |
| :func:`ssdlite_timm` | 16, 32 | 4 SSDLite extra blocks (8 px .. 1 px maps at 320) | torchvision's SSDLite default boxes |
| :func:`fasterrcnn_timm_fpn` | 4, 8, 16, 32 | FPN 256 + max-pool level | torchvision's Faster R-CNN defaults |
| :func:`retinanet_timm_fpn` / :func:`fcos_timm_fpn` | 8, 16, 32 | FPN 256 + P6, P7 | torchvision's RetinaNet / FCOS defaults |

``build_model(..., anchor_sizes=..., anchor_ratios=...)`` replaces these anchors after building, with the
same count per location, as for the torchvision models (:mod:`detect_ft.models.anchors`).

Each builder is registered beside it, on ``tf_efficientnet_lite0`` by default, in the ``timm`` backbone
family: its stages are the timm body's feature stages, and its BatchNorm freezes with timm's converter.
These models have no COCO weights; the parameters in their figures are counted on the model built for 80
classes, the latency measured with ``tools/model_table.py`` (see the README for the machine and date).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import Conv2dNormActivation

from detect_ft.models.registry import (
    CLS_LOGITS_HEAD,
    RCNN_HEAD,
    SSDLITE_HEAD,
    ModelFigures,
    register_family,
    register_model,
)
from detect_ft.models.timm_backbone import body_stages, create_body, freeze_body_batchnorm, normalisation

FPN_CHANNELS = 256

# Chosen with tools/finetune_suite.py on four real sets (docs/benchmarks.md, "Fine-tuning suite"): the
# backbone frozen for the first third of the run (a share, so it holds at any budget), then its last 3
# stages train at the heads' LR (all 5 cost twice the CPU time a step); the backbone at a tenth of the LR
# with nothing frozen (the earlier recipe) collapsed or lagged on the sets other than raccoon. Batch 8 at
# lr 0.002 beat batch 16 at 0.001 on each set screened (twice the optimizer steps in the same minutes, and a few
# hundred photos give few steps); lr 0.004 and a larger input did not pay.
TIMM_RECIPE = (
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
IMAGENET_BACKBONE = "ImageNet backbone"


def timm_stages(model: nn.Module) -> list[list[nn.Module]]:
    """The timm body's feature stages (:func:`~detect_ft.models.timm_backbone.body_stages`)."""
    return body_stages(model.backbone.body)


def freeze_timm_batchnorm(model: nn.Module) -> None:
    """Freeze the timm body's BatchNorm with timm's converter, which keeps the activation that timm's
    ``BatchNormAct2d`` carries (torchvision's FrozenBatchNorm2d would drop it)."""
    freeze_body_batchnorm(model.backbone.body)


# stage count: that of the timm backbone chosen (model.backbone), counted from it
register_family("timm", stages=timm_stages, freeze_batchnorm=freeze_timm_batchnorm)


class SSDLiteFeatures(nn.Module):
    """The timm body's stride-16 and stride-32 maps, then four SSDLite extra blocks (stride 2 each).

    ``forward(x (B, 3, S, S))`` returns an OrderedDict of six maps; at S = 320 they are 20, 10, 5, 3, 2, 1
    px wide with ``out_channels`` channels.
    """

    def __init__(self, backbone: str, norm_layer) -> None:
        super().__init__()
        self.body = create_body(backbone)
        channels = self.body.feature_info.channels()
        self.extra = nn.ModuleList(
            [
                _extra_block(channels[-1], 512, norm_layer),
                _extra_block(512, 256, norm_layer),
                _extra_block(256, 256, norm_layer),
                _extra_block(256, 128, norm_layer),
            ]
        )
        for conv in self.extra.modules():
            if isinstance(conv, nn.Conv2d):  # torchvision's SSDLite initialisation of the extra blocks
                nn.init.normal_(conv.weight, mean=0.0, std=0.03)
        self.out_channels = [channels[-2], channels[-1], 512, 256, 256, 128]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.body(x)
        outputs = [levels[-2], levels[-1]]
        for block in self.extra:
            outputs.append(block(outputs[-1]))
        return OrderedDict((str(i), v) for i, v in enumerate(outputs))


def _extra_block(in_channels: int, out_channels: int, norm_layer) -> nn.Sequential:
    """1x1 projection to half the channels, 3x3 depthwise with stride 2, 1x1 to ``out_channels`` (ReLU6)."""
    mid = out_channels // 2
    conv = partial(Conv2dNormActivation, norm_layer=norm_layer, activation_layer=nn.ReLU6)
    return nn.Sequential(
        conv(in_channels, mid, kernel_size=1),
        conv(mid, mid, kernel_size=3, stride=2, groups=mid),
        conv(mid, out_channels, kernel_size=1),
    )


class TimmFPN(nn.Module):
    """The timm body's last ``num_levels`` maps through a feature pyramid (``FPN_CHANNELS`` channels each).

    ``forward(x (B, 3, H, W))`` returns an OrderedDict ``"0".."n-1"`` plus the extra levels' names.
    """

    def __init__(self, backbone: str, num_levels: int, extra_blocks: nn.Module) -> None:
        super().__init__()
        self.body = create_body(backbone)
        channels = self.body.feature_info.channels()
        self.num_levels = min(num_levels, len(channels))
        self.fpn = FeaturePyramidNetwork(channels[-self.num_levels :], FPN_CHANNELS, extra_blocks=extra_blocks)
        self.out_channels = FPN_CHANNELS

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.body(x)[-self.num_levels :]
        return self.fpn(OrderedDict((str(i), v) for i, v in enumerate(levels)))


@register_model(
    "ssdlite320_efficientnet_lite0",
    timm_backbone="tf_efficientnet_lite0",
    family="timm",
    head_pattern=SSDLITE_HEAD,
    head_layout="anchors",
    default_trainable=5,
    frozen_bn=False,
    fixed_size=True,
    recipe=TIMM_RECIPE,
    description="SSDLite 320x320, EfficientNet-Lite0 (timm, ImageNet weights offline): fast, INT8-friendly",
    figures=ModelFigures(
        coco_map=None,
        params_m=4.2,
        latency_ms=122,
        note=f"{IMAGENET_BACKBONE}; raccoon mAP50 0.97 after the 5-minute demo",
    ),
)
def ssdlite_timm(*, backbone: str, num_classes: int, size: int = 320) -> SSD:
    """SSDLite at ``size`` x ``size`` on a timm backbone; torchvision's SSDLite320 settings otherwise."""
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    features = SSDLiteFeatures(backbone, norm_layer)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(features.out_channels, anchors.num_anchors_per_location(), num_classes, norm_layer)
    mean, std = normalisation(features.body)
    return SSD(
        features,
        anchors,
        (size, size),
        num_classes,
        image_mean=mean,
        image_std=std,
        head=head,
        score_thresh=0.001,
        nms_thresh=0.55,
        detections_per_img=300,
        topk_candidates=300,
    )


@register_model(
    "fasterrcnn_efficientnet_lite0_fpn",
    timm_backbone="tf_efficientnet_lite0",
    family="timm",
    head_pattern=RCNN_HEAD,
    head_layout="rcnn",
    default_trainable=3,
    frozen_bn=True,
    recipe=TIMM_RECIPE,
    description="Faster R-CNN, EfficientNet-Lite0 FPN (timm, ImageNet weights offline), 512 px",
    figures=ModelFigures(coco_map=None, params_m=20.4, latency_ms=1177, note=IMAGENET_BACKBONE),
)
def fasterrcnn_timm_fpn(*, backbone: str, num_classes: int, min_size: int = 512, max_size: int = 853) -> FasterRCNN:
    """Faster R-CNN with an FPN over the timm backbone's stride 4..32 maps."""
    features = TimmFPN(backbone, 4, LastLevelMaxPool())
    mean, std = normalisation(features.body)
    return FasterRCNN(features, num_classes, min_size=min_size, max_size=max_size, image_mean=mean, image_std=std)


@register_model(
    "retinanet_efficientnet_lite0_fpn",
    timm_backbone="tf_efficientnet_lite0",
    family="timm",
    head_pattern=CLS_LOGITS_HEAD,
    head_layout="anchors",
    default_trainable=3,
    frozen_bn=True,
    sigmoid_head=True,
    recipe=TIMM_RECIPE,
    description="RetinaNet, EfficientNet-Lite0 FPN (timm, ImageNet weights offline), 512 px",
    figures=ModelFigures(coco_map=None, params_m=12.5, latency_ms=932, note=IMAGENET_BACKBONE),
)
def retinanet_timm_fpn(*, backbone: str, num_classes: int, min_size: int = 512, max_size: int = 853) -> RetinaNet:
    """RetinaNet (v2 head: GroupNorm) with an FPN over the stride 8..32 maps plus P6 and P7."""
    features = TimmFPN(backbone, 3, LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS))
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = RetinaNetHead(
        FPN_CHANNELS, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 32)
    )
    mean, std = normalisation(features.body)
    return RetinaNet(
        features,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=mean,
        image_std=std,
        anchor_generator=anchors,
        head=head,
    )


@register_model(
    "fcos_efficientnet_lite0_fpn",
    timm_backbone="tf_efficientnet_lite0",
    family="timm",
    head_pattern=CLS_LOGITS_HEAD,
    head_layout="anchors",
    default_trainable=3,
    frozen_bn=True,
    sigmoid_head=True,
    anchor_free=True,
    recipe=TIMM_RECIPE,
    description="FCOS, EfficientNet-Lite0 FPN (timm, ImageNet weights offline), 512 px",
    figures=ModelFigures(coco_map=None, params_m=11.0, latency_ms=767, note=IMAGENET_BACKBONE),
)
def fcos_timm_fpn(*, backbone: str, num_classes: int, min_size: int = 512, max_size: int = 853) -> FCOS:
    """FCOS with an FPN over the stride 8..32 maps plus P6 and P7."""
    features = TimmFPN(backbone, 3, LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS))
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    head = FCOSHead(FPN_CHANNELS, anchors.num_anchors_per_location()[0], num_classes)
    mean, std = normalisation(features.body)
    return FCOS(
        features,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=mean,
        image_std=std,
        anchor_generator=anchors,
        head=head,
    )
