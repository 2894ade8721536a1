"""TensorFlow-style 'same' padding written into the exported graph as constants.

timm builds the stride-2 convolutions of the ``tf_*`` EfficientNets (EfficientNet-Lite) as ``Conv2dSame``,
which computes its padding from the input's size on every call. Traced to ONNX, that is a chain of shape
arithmetic and a ``Pad`` op before each such convolution, all run for every image; in onnxruntime the
``Pad`` also breaks the chain of blocked-layout convolutions, with a layout reorder on each side of it.

When a convolution's input height and width are multiples of its stride, 'same' padding is one constant
whatever the size: ``(k - 1) * dilation + 1 - stride`` pixels, the odd one after (bottom/right). The
detectors guarantee such sizes: their in-graph transform resizes to a fixed size (SSD) or pads the batch to
a multiple of ``size_divisible`` (two-stage, RetinaNet, FCOS). :func:`freeze_same_padding` checks that
guarantee against each convolution's place in the network (its cumulative stride) and, where it holds,
swaps in a :class:`StaticSameConv2d`, which the exporter writes as one ``Conv`` with asymmetric ``pads``:
the same numbers, no ``Pad`` op, no shape arithmetic (measured on the fine-tuned Lite0 SSDLite, 640x480
frames, onnxruntime on 2 threads: 16.8 -> 13.6 ms per image).
"""

from __future__ import annotations

import sys
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

PROBE_SIZE = 256  # side of the dry run that finds each convolution's cumulative stride (a power of two)


def same_pads(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) 'same' padding of one dimension whose size is a multiple of ``stride``."""
    total = max((kernel - 1) * dilation + 1 - stride, 0)
    return total // 2, total - total // 2


class _PaddedConv(torch.autograd.Function):
    """``conv2d(pad(x))``, exported as a single ONNX ``Conv`` carrying the padding in its ``pads``."""

    @staticmethod
    def forward(ctx, x, weight, bias, pads, kernel, stride, dilation, groups):
        return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, dilation, groups)  # pads: (left, right, top, bottom)

    @staticmethod
    def symbolic(g, x, weight, bias, pads, kernel, stride, dilation, groups):
        left, right, top, bottom = pads
        inputs = [x, weight] if bias is None or bias.node().mustBeNone() else [x, weight, bias]
        return g.op(
            "Conv",
            *inputs,
            kernel_shape_i=list(kernel),
            pads_i=[top, left, bottom, right],  # ONNX: all the starts, then all the ends
            strides_i=list(stride),
            dilations_i=list(dilation),
            group_i=groups,
        )


class StaticSameConv2d(nn.Conv2d):
    """A 'same'-padded convolution for inputs whose height and width are multiples of its stride.

    ``forward(x (B, C_in, H, W)) -> (B, C_out, H / stride, W / stride)``; holds only for such H and W
    (:func:`freeze_same_padding` swaps one in only where the detector guarantees them).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            0,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
        )
        self.load_state_dict(conv.state_dict())
        top, bottom = same_pads(conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        left, right = same_pads(conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        self.same_pads = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (self.same_pads, self.kernel_size, self.stride, self.dilation, self.groups)
        return _PaddedConv.apply(x, self.weight, self.bias, *args)


def backbone_input_multiple(model: nn.Module) -> Optional[tuple[int, int]]:
    """What every backbone input's (height, width) is a multiple of, by the detector's own transform:
    its fixed size, else its ``size_divisible``; None without a torchvision detection transform."""
    transform = getattr(model, "transform", None)
    if transform is None or not hasattr(transform, "size_divisible"):
        return None
    fixed = getattr(transform, "fixed_size", None)
    if fixed:
        return int(fixed[0]), int(fixed[1])
    return int(transform.size_divisible), int(transform.size_divisible)


def cumulative_strides(backbone: nn.Module, convs: dict[str, nn.Module]) -> dict[str, int]:
    """How much smaller than the backbone input each of ``convs``' inputs is, from one dry run of
    ``backbone`` on a :data:`PROBE_SIZE` square; a convolution whose input does not divide it is left out."""
    seen: dict[str, int] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:  # a pre-hook returning a value would replace the input
            seen.setdefault(name, int(args[0].shape[-1]))

        return hook

    hooks = [conv.register_forward_pre_hook(record(name)) for name, conv in convs.items()]
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: PROBE_SIZE // size for name, size in seen.items() if PROBE_SIZE % size == 0}


def freeze_same_padding(model: nn.Module) -> int:
    """Swap ``model``'s timm ``Conv2dSame`` layers for :class:`StaticSameConv2d` where the detector's
    transform guarantees inputs that are multiples of their stride; returns how many were swapped.

    For an eval-mode copy that is about to be traced (:func:`detect_ft.export.onnx_export.exportable`);
    the outputs are unchanged for every input the detector can give those layers.
    """
    timm_layers = sys.modules.get("timm.layers")
    if timm_layers is None:  # a model holding timm layers was built with timm imported; spare others the import
        return 0
    multiple = backbone_input_multiple(model)
    convs = {name: module for name, module in model.named_modules() if type(module) is timm_layers.Conv2dSame}
    if multiple is None or not convs or not hasattr(model, "backbone"):
        return 0
    swapped = 0
    for name, reduction in cumulative_strides(model.backbone, convs).items():
        conv = convs[name]
        if any(side % (reduction * stride) for side, stride in zip(multiple, conv.stride)):
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, StaticSameConv2d(conv))
        swapped += 1
    return swapped
