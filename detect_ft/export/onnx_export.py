"""Export a torchvision detector to ONNX with its resize/normalise transform and post-processing inside.

The graph takes one float image ``image`` (3, H, W) in [0, 1], RGB, any H and W, and returns
``boxes`` (N, 4) float32 xyxy in that image's pixels, ``scores`` (N,) float32 and ``labels`` (N,) int64
in 1..K, N >= 0. What stays outside the graph (decode, BGR->RGB, /255, HWC->CHW) is written into the
model's metadata (key ``detect_ft``, JSON) so that any runtime can reproduce it; see
:mod:`detect_ft.inference.runtime`, which reads it.

Exported with ``batch=N > 1``, the graph instead takes ``image`` (N, 3, H, W), N images of one size, and
returns every image's detections concatenated, image 0's first: ``boxes`` (M, 4), ``scores`` (M,),
``labels`` (M,), plus ``counts`` (N,) int64, how many of the M rows belong to each image. N is fixed
at export: torchvision's detectors loop over the images of a batch in Python (resize, anchors,
post-processing), so tracing unrolls the loop for the traced batch size and no graph takes any N.
The metadata's ``input.batch`` says N.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detect_ft._version import __version__
from detect_ft.checkpoint.format import input_normalisation
from detect_ft.export.static_padding import freeze_same_padding
from detect_ft.inference.predictions import METADATA_FORMAT, METADATA_KEY
from detect_ft.models.registry import MODELS
from detect_ft.utils.errors import DetectFTError

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels")
COUNTS_NAME = "counts"  # batch graphs only: detections per image
MAX_BATCH = 64
BATCH_OUTPUT_SPEC = {  # the metadata's output_spec of a batch graph
    "boxes": "float32 (M, 4) xyxy: every image's detections, image 0's first, each in its image's pixels",
    "scores": "float32 (M,)",
    "labels": "int64 (M,), 1..K; label k is class_names[k-1]",
    COUNTS_NAME: "int64 (batch,): how many of the M rows, in order, belong to each image",
}


class SingleImageDetector(nn.Module):
    """``forward(image (3, H, W)) -> (boxes (N, 4), scores (N,), labels (N,))`` around a torchvision
    detector that takes and returns lists; tensors in and out is what ONNX needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model([image])[0]
        return out["boxes"], out["scores"], out["labels"]


class BatchDetector(nn.Module):
    """``forward(images (N, 3, H, W)) -> (boxes (M, 4), scores (M,), labels (M,), counts (N,))``: a
    torchvision detector run on N images at once, the images' detections concatenated in order and
    ``counts[i]`` of them belonging to image i (variable-length outputs cannot be stacked)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outs = self.model(list(images.unbind(0)))
        # ones_like(...).sum() keeps each count a traced value (len() would freeze the traced one).
        counts = torch.stack([torch.ones_like(out["labels"]).sum() for out in outs])
        return (
            torch.cat([out["boxes"] for out in outs]),
            torch.cat([out["scores"] for out in outs]),
            torch.cat([out["labels"] for out in outs]),
            counts,
        )


def check_batch(batch: int) -> int:
    """``batch`` when it is an export batch size 1..:data:`MAX_BATCH`, else a one-line DetectFTError."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise DetectFTError(f"export batch {batch!r}: pass a whole number of images from 1 to {MAX_BATCH}, e.g. 8")
    return batch


class ExactResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform whose traced min/max-size resize computes the output size as eager
    PyTorch does.

    Eager PyTorch sizes the resized image as ``floor(side * scale)`` in float64. torchvision's tracing
    path hands ``scale`` to ONNX as float32, so e.g. a 70x100 image becomes 111x159 instead of 112x160 at
    min_size 128 / max_size 160, and every box moves. While tracing, this transform computes the size in
    float64 in the graph (1-element tensors: the exporter turns 0-d constants into float32 scalars) and
    passes it to Resize as explicit sizes. Fixed-size (SSD) models resize to constant sizes and keep
    torchvision's path, as does everything that is not an eval-mode trace without targets.
    """

    @classmethod
    def like(cls, transform: GeneralizedRCNNTransform) -> "ExactResizeTransform":
        """A copy of ``transform`` (same sizes, mean, std and padding) with the exact traced resize."""
        return cls(
            tuple(transform.min_size),
            transform.max_size,
            list(transform.image_mean),
            list(transform.image_std),
            size_divisible=transform.size_divisible,
            fixed_size=transform.fixed_size,
        )

    def resize(
        self, image: torch.Tensor, target: Optional[dict[str, torch.Tensor]] = None
    ) -> tuple[torch.Tensor, Optional[dict[str, torch.Tensor]]]:
        if self.fixed_size is not None or self.training or target is not None or not torch.jit.is_tracing():
            return super().resize(image, target)
        from torch.onnx import operators  # shape_as_tensor: the shape as a traced tensor, as torchvision reads it

        shape = operators.shape_as_tensor(image)[-2:].to(torch.float64)
        low = torch.tensor([float(self.min_size[-1])], dtype=torch.float64)
        high = torch.tensor([float(self.max_size)], dtype=torch.float64)
        scale = torch.minimum(low / shape.min().reshape(1), high / shape.max().reshape(1))
        size = torch.floor(shape * scale).to(torch.int64)
        resized = torch.nn.functional.interpolate(
            image[None], size=[size[0], size[1]], mode="bilinear", align_corners=False
        )
        return resized[0], target


def exportable(model: nn.Module) -> nn.Module:
    """A CPU, eval-mode copy of ``model`` to trace: its ``transform`` (when it is torchvision's detection
    transform) becomes an :class:`ExactResizeTransform`, and its timm 'same'-padded convolutions get
    constant padding where the transform allows (:func:`freeze_same_padding`). ``model`` itself is left
    as it is."""
    model = copy.deepcopy(model).eval().cpu()
    # Exactly torchvision's class: a subclass may resize its own way, and keeps it.
    if type(getattr(model, "transform", None)) is GeneralizedRCNNTransform:
        model.transform = ExactResizeTransform.like(model.transform)
    freeze_same_padding(model)
    return model.eval()  # the new transform is built in training mode, which skips the boxes' rescaling


def input_sizes(model: nn.Module) -> dict[str, Any]:
    """The in-graph resize of a torchvision detector: ``min_size``, ``max_size``, ``fixed_size``."""
    transform = model.transform
    fixed = getattr(transform, "fixed_size", None)
    return {
        "min_size": int(transform.min_size[-1]),
        "max_size": int(transform.max_size),
        "fixed_size": list(fixed) if fixed else None,
        **input_normalisation(model),
    }


def build_metadata(
    model: nn.Module,
    *,
    model_name: str,
    class_names: Sequence[str],
    category_ids: Optional[Sequence[int]] = None,
    opset: int,
    batch: int = 1,
    extra: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The JSON document stored under the ``detect_ft`` metadata key.

    ``input`` says exactly how to build the graph input from a decoded image (the steps
    :func:`detect_ft.inference.runtime.preprocess` applies) and how many same-size images the graph
    takes at once (``batch``; with ``batch_dim`` when > 1); ``in_graph`` what the graph does itself.
    """
    batched = check_batch(batch) > 1
    sizes = input_sizes(model)
    post = MODELS[model_name].postprocessor(model)
    meta = {
        "format": METADATA_FORMAT,
        "detect_ft_version": __version__,
        "model_name": model_name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "category_ids": [int(c) for c in (category_ids or range(1, len(class_names) + 1))],
        "opset": int(opset),
        "input": {
            "name": INPUT_NAME,
            "decode": "opencv imread, then BGR->RGB",
            "color": "RGB",
            "dtype": "float32",
            "scale": 1.0 / 255.0,  # value = uint8 pixel * scale, so inputs lie in [0, 1]
            "layout": "CHW",
            "batch_dim": batched,
            "batch": batch,  # images per run, all of one size; a runtime pads a short batch
            "min_size": sizes["min_size"],
            "max_size": sizes["max_size"],
            "fixed_size": sizes["fixed_size"],
        },
        "in_graph": {
            "resize": "bilinear; fixed_size if set, else short side to min_size capped by long side max_size",
            "normalize": {"mean": sizes["mean"], "std": sizes["std"]},
            "postprocess": "box decoding, score threshold, NMS; boxes scaled back to the input image",
            "score_thresh": float(post.score_thresh),
            "detections_per_img": int(post.detections_per_img),
        },
        "outputs": list(OUTPUT_NAMES),
        "output_spec": {
            "boxes": "float32 (N, 4) xyxy, pixels of the input image",
            "scores": "float32 (N,)",
            "labels": "int64 (N,), 1..K; label k is class_names[k-1]",
        },
    }
    if batched:
        meta["counts_output"], meta["output_spec"] = COUNTS_NAME, dict(BATCH_OUTPUT_SPEC)
    meta.update(extra or {})
    return meta


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    metadata: dict[str, Any],
    opset: int = 17,
    sample_size: tuple[int, int] = (240, 320),
    batch: int = 1,
) -> None:
    """Trace a copy of ``model`` (:func:`exportable`: eval mode, CPU) to ``path``, check it with ``onnx.checker`` and store ``metadata``.

    Args:
        model: torchvision detector taking a list of (3, H, W) float images in [0, 1].
        metadata: :func:`build_metadata`'s document.
        opset: ONNX opset (torchvision's detectors need >= 11).
        sample_size: (height, width) of the tracing image; H and W stay dynamic in the graph.
        batch: 1: the graph takes one (3, H, W) image; N > 1: (N, 3, H, W) images of one size and also
            returns ``counts`` (:class:`BatchDetector`; N is fixed in the graph).

    ``path`` is written in place; callers wanting an atomic write pass a temporary path.
    """
    import onnx

    model = exportable(model)
    generator = torch.Generator().manual_seed(0)
    if check_batch(batch) > 1:
        wrapper, outputs, axes = BatchDetector(model), [*OUTPUT_NAMES, COUNTS_NAME], {2: "height", 3: "width"}
        image = torch.rand(batch, 3, *sample_size, generator=generator)
    else:
        wrapper, outputs, axes = SingleImageDetector(model), list(OUTPUT_NAMES), {1: "height", 2: "width"}
        image = torch.rand(3, *sample_size, generator=generator)
    dynamic = {INPUT_NAME: axes, **{name: {0: "detections"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every Python-side shape computation in torchvision's transform; the
        # detectors are written so those stay valid for other sizes (torchvision/test/test_onnx.py).
        warnings.simplefilter("ignore")
        try:
            # dynamo=False pins the TorchScript exporter: the dynamo exporter cannot capture the
            # data-dependent shapes of torchvision's score filtering and NMS (torch 2.4-2.14).
            torch.onnx.export(
                wrapper,
                (image,),
                os.fspath(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        except Exception as exc:
            raise DetectFTError(
                f"ONNX export of {metadata.get('model_name')} at opset {opset} failed: {str(exc).splitlines()[0]}; "
                "try opset 17 (export.opset; torchvision's detectors need opset >= 11)"
            ) from exc
    proto = onnx.load(os.fspath(path))
    onnx.checker.check_model(proto)
    set_metadata(proto, metadata)
    onnx.save(proto, os.fspath(path))


def set_metadata(proto, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` as JSON under the ``detect_ft`` key of an ``onnx.ModelProto`` (replacing it)."""
    keep = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.producer_name = "detect-ft"
    proto.producer_version = __version__
