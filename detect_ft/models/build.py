"""``build_model``: a registered torchvision detector with a new class head for the user's classes.

The detector is built for ``num_classes + 1`` outputs (row 0 is background), so its class-dependent
tensors (see the table in :mod:`detect_ft.models.registry`) start from torchvision's own initialisation.
Every other tensor is then copied bit-identical from the source weights. Head rows of user classes whose
names match a class of the source (COCO's 80 names, or the classes of a detect-ft checkpoint), and the
background row, are copied from the source rows too, unless ``init_from_coco_names=False``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from detect_ft.checkpoint import format as ckpt
from detect_ft.checkpoint.format import input_normalisation, read_checkpoint, set_input_normalisation  # noqa: F401  (re-exported)
from detect_ft.models.anchors import set_anchors, set_saved_anchors
from detect_ft.models.finetune import backbone_stages, freeze_backbone_batchnorm, set_trainable_backbone_layers
from detect_ft.models.registry import MODELS, ModelSpec
from detect_ft.models.timm_backbone import imagenet_state_dict
from detect_ft.models.weights import (
    SourceWeights,
    coco_category_names,
    download_error,
    fetch_state_dict,
    read_weights_file,
)
from detect_ft.models.zoo import default_weights
from detect_ft.utils.errors import ConfigError, WeightsError


def build_model(
    name: str,
    num_classes: int,
    weights: str | None = None,
    class_names: Sequence[str] | None = None,
    *,
    backbone: str | None = None,
    init_from_coco_names: bool = True,
    trainable_backbone_layers: int | None = None,
    frozen_bn: bool | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    score_thresh: float | None = None,
    detections_per_img: int = 100,
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    anchor_ratios: Sequence[Sequence[float]] | None = None,
) -> nn.Module:
    """Build detector ``name`` for ``num_classes`` user classes (labels 1..K; 0 is background).

    Args:
        weights: ``coco`` (torchvision's COCO detector weights), ``imagenet`` (ImageNet backbone only),
            ``none`` (random init) or a path to a full-detector state dict / detect-ft checkpoint of the
            same architecture with any class count; None: the model's own (``detect-ft models`` lists it).
        class_names: K names, used to start head rows from matching source classes.
        backbone: for models on a timm backbone, another timm model name to use as the backbone
            (default: the registry's, e.g. ``tf_efficientnet_lite0``).
        trainable_backbone_layers: backbone stages that train, counted from the heads (torchvision's
            meaning); default: torchvision's default with pretrained weights, all stages without.
        frozen_bn: replace backbone BatchNorm by FrozenBatchNorm2d; default: as torchvision does for
            pretrained weights of this model.
        min_size, max_size: input resize bounds (SSD models: the square input side).
        score_thresh, detections_per_img: post-processing of the model's predictions.
        anchor_sizes, anchor_ratios: anchors in place of the model's defaults (None or empty: the
            defaults), laid out as the model's own so every head tensor keeps its shape
            (:mod:`detect_ft.models.anchors`, :mod:`detect_ft.data.anchor_fit`).

    Returns:
        The torchvision detector. ``model(images)`` takes a list of float tensors (3, H, W) in [0, 1] and,
        in eval mode, returns per image ``{"boxes": (N, 4) xyxy pixels, "scores": (N,), "labels": (N,)}``.
    """
    spec = _checked_spec(name, num_classes, class_names, backbone)
    weights = default_weights(spec) if weights is None else weights
    if spec.timm_backbone:
        model, pretrained = _build_timm(
            name, spec, backbone or spec.timm_backbone, num_classes, weights, class_names, init_from_coco_names
        )
    else:
        model, pretrained = _build_torchvision(name, spec, num_classes, weights, class_names, init_from_coco_names)
    if spec.sigmoid_head:
        _silence_background_column(model)
    if frozen_bn if frozen_bn is not None else (pretrained and spec.frozen_bn):
        freeze_backbone_batchnorm(model, spec.family)
    stages = len(backbone_stages(model, spec.family))
    if trainable_backbone_layers is None:
        trainable_backbone_layers = min(spec.default_trainable, stages) if pretrained else stages
    set_trainable_backbone_layers(model, name, trainable_backbone_layers)
    _set_input_size(model, name, spec, min_size, max_size)
    _set_postprocess(model, spec, score_thresh, detections_per_img)
    set_anchors(model, anchor_sizes, anchor_ratios, name=name)
    return model


def _checked_spec(name: str, num_classes: int, class_names: Sequence[str] | None, backbone: str | None) -> ModelSpec:
    """The registry entry of ``name``, once the request is known to be buildable."""
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; allowed: {', '.join(MODELS)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1 (the user's classes, background excluded), got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"{len(class_names)} class names given for num_classes={num_classes}")
    spec = MODELS[name]
    if backbone and not spec.timm_backbone:
        raise ConfigError(
            f"model.backbone: {name} has a fixed torchvision backbone; model.backbone applies to the "
            f"timm models ({', '.join(n for n, s in MODELS.items() if s.timm_backbone)})"
        )
    return spec


def _build_torchvision(
    name: str, spec: ModelSpec, num_classes: int, weights: str, class_names, match_names: bool
) -> tuple[nn.Module, bool]:
    """A torchvision detector with ``weights`` loaded; and whether anything pretrained was loaded."""
    if weights == "imagenet":
        # The builder knows which backbone variant the ImageNet weights fit (SSDlite's full-width tail).
        with _download_errors(spec.backbone_weights):
            model = spec.builder(weights=None, weights_backbone=spec.backbone_weights, num_classes=num_classes + 1)
        return model, True
    model = spec.builder(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    source = _source_weights(weights, name, spec)
    if source is not None:
        load_pretrained(model, name, source, class_names, match_names=match_names)
    return model, source is not None


@contextlib.contextmanager
def _download_errors(weights) -> Iterator[None]:
    """Turn a failed download inside a torchvision builder into the WeightsError that names the fix."""
    try:
        yield
    except OSError as exc:  # URLError, socket and HTTP errors are all OSErrors
        raise download_error(weights, exc) from None


@torch.no_grad()
def _silence_background_column(model: nn.Module) -> None:
    """Make the sigmoid heads (RetinaNet, FCOS) unable to predict label 0.

    Their classifier scores every column with a sigmoid, background column 0 included, so with
    ``num_classes = K + 1`` label 0 could come out of post-processing. A zero weight and a bias of -1e4
    give that column a score of exactly 0, which post-processing drops (it keeps ``score > thresh``);
    its focal-loss gradient is then exactly 0 too, so training leaves it so (also under bf16/fp16).
    """
    head = model.head.classification_head
    logits = head.cls_logits
    anchors = logits.out_channels // head.num_classes
    rows = torch.arange(anchors) * head.num_classes
    logits.weight[rows] = 0.0
    logits.bias[rows] = -1e4


def _build_timm(
    name: str, spec: ModelSpec, backbone: str, num_classes: int, weights: str, class_names, match_names: bool
) -> tuple[nn.Module, bool]:
    """A timm-backbone detector with ``weights`` loaded; and whether anything pretrained was loaded."""
    model = spec.builder(backbone=backbone, num_classes=num_classes + 1)
    if weights == "imagenet":
        state, _ = imagenet_state_dict(backbone, model.backbone.body)
        model.backbone.body.load_state_dict(state)
        return model, True
    if weights == "coco":
        raise ConfigError(
            f"model.weights: {name} has no COCO weights (its backbone comes from timm); use "
            f"model.weights=imagenet, none, or a detect-ft checkpoint of a {name}"
        )
    source = _source_weights(weights, name, spec)
    if source is not None:
        load_pretrained(model, name, source, class_names, match_names=match_names)
    return model, source is not None


def _backbone_bn_was_frozen(model: nn.Module, name: str, state: dict[str, torch.Tensor]) -> bool:
    """True when ``state`` lacks the BatchNorm counters of the backbone stages (saved with frozen BN)."""
    stage_modules = {
        id(m) for stage in backbone_stages(model, MODELS[name].family) for top in stage for m in top.modules()
    }
    counters = [
        f"{module_name}.num_batches_tracked"
        for module_name, module in model.named_modules()
        if id(module) in stage_modules and isinstance(module, nn.BatchNorm2d)
    ]
    return bool(counters) and not any(key in state for key in counters)


def _source_weights(weights: str, name: str, spec: ModelSpec) -> SourceWeights | None:
    if weights == "none":
        return None
    if weights == "coco" and spec.coco_weights is not None:
        return SourceWeights(
            fetch_state_dict(spec.coco_weights), coco_category_names(), f"torchvision {spec.coco_weights}"
        )
    if os.path.sep in weights or weights.endswith((".pt", ".pth")) or os.path.exists(weights):
        return read_weights_file(weights, name)
    raise ConfigError(f"model.weights: got {weights!r}; allowed: coco, imagenet, none, or a path to a weights file")


def _normalise(class_name: str) -> str:
    return class_name.strip().lower().replace("_", " ").replace("-", " ")


def load_pretrained(
    model: nn.Module,
    name: str,
    source: SourceWeights,
    class_names: Sequence[str] | None,
    *,
    match_names: bool = True,
) -> None:
    """Copy every non-head tensor of ``source`` into ``model``; fill head rows as the module doc says."""
    spec = MODELS[name]
    target = model.state_dict()
    optional = lambda key: key.endswith("num_batches_tracked")  # absent where BatchNorm was frozen
    missing = [k for k in target if k not in source.state and not optional(k)]
    unexpected = [k for k in source.state if k not in target and not optional(k)]
    if missing or unexpected:
        raise WeightsError(
            f"model.weights: {source.origin} does not fit {name} ({len(missing)} tensors missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); pick weights of a {name}"
        )
    new_names = ["__background__", *class_names] if class_names is not None else None
    new_c = spec.num_head_columns(model)
    loaded: dict[str, torch.Tensor] = {}
    for key, tensor in target.items():
        if key not in source.state:
            continue
        if spec.is_head_key(key):
            loaded[key] = _head_tensor(
                key, tensor, source.state[key], spec, new_c, new_names, source.class_names, match_names
            )
        elif source.state[key].shape != tensor.shape:
            raise WeightsError(
                f"model.weights: {source.origin} tensor {key} has shape {tuple(source.state[key].shape)}, "
                f"{name} needs {tuple(tensor.shape)}; pick weights of the same architecture"
            )
        else:
            loaded[key] = source.state[key]
    model.load_state_dict(loaded, strict=False)


def _head_tensor(
    key: str,
    fresh: torch.Tensor,
    source: torch.Tensor,
    spec: ModelSpec,
    new_c: int,
    new_names: list[str] | None,
    source_names: list[str] | None,
    match_names: bool,
) -> torch.Tensor:
    """The new head tensor: the source one where classes are the same, else fresh with matched rows copied.

    Rows are laid out per class (``c``; Faster R-CNN's box deltas ``4c..4c+3``), repeated per anchor
    (``a * C + c``) in the anchor-based heads.
    """
    if source.shape == fresh.shape and (source_names is None or new_names is None or source_names == new_names):
        return source.clone()
    out = fresh.clone()
    rows_per_class = 4 if "bbox_pred" in key else 1
    groups = 1 if spec.head_layout == "rcnn" else fresh.shape[0] // new_c
    src_c = source.shape[0] // (groups * rows_per_class)
    if source_names is None and src_c == len(coco_category_names()):
        source_names = coco_category_names()  # a bare 91-class torchvision state dict
    if not match_names or new_names is None or source_names is None or len(source_names) != src_c:
        return out
    index = {_normalise(n): j for j, n in enumerate(source_names) if n != "N/A"}
    pairs = [(i, index[_normalise(n)]) for i, n in enumerate(new_names) if _normalise(n) in index]
    for group in range(groups):
        for i, j in pairs:
            dst = (group * new_c + i) * rows_per_class
            src = (group * src_c + j) * rows_per_class
            out[dst : dst + rows_per_class] = source[src : src + rows_per_class]
    return out


def _set_input_size(model: nn.Module, name: str, spec: ModelSpec, min_size: int | None, max_size: int | None) -> None:
    transform = model.transform
    if spec.fixed_size:
        if max_size is not None and min_size is not None and max_size != min_size:
            raise ConfigError(f"model.max_size: {name} takes a square input; set only model.min_size")
        side = min_size or max_size
        if side is None:
            return
        if spec.fixed_side is not None and side != spec.fixed_side:
            # SSD300's default boxes use fixed pixel steps [8 .. 300], so other input sizes misplace them.
            raise ConfigError(f"model.min_size: {name} takes {spec.fixed_side} px inputs only, got {side}")
        transform.min_size, transform.max_size, transform.fixed_size = (side,), side, (side, side)
        return
    if min_size is not None:
        transform.min_size = (min_size,)
    if max_size is not None:
        transform.max_size = max_size


def _set_postprocess(model: nn.Module, spec: ModelSpec, score_thresh: float | None, detections_per_img: int) -> None:
    owner = spec.postprocessor(model)
    if score_thresh is not None:
        owner.score_thresh = score_thresh
    owner.detections_per_img = detections_per_img


def load_detector(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the detector saved in a detect-ft checkpoint, in eval mode.

    Returns:
        ``(model, meta)`` where meta holds ``model_name``, ``num_classes``, ``class_names``,
        ``category_ids``, ``config`` (plain dict), ``epoch`` and ``metrics`` (the validation the
        checkpoint was saved after, with the deployment ``thresholds``; None without one).

    Raises:
        CheckpointError: the file is missing, unsafe, of a newer format or not a detect-ft checkpoint.
    """
    # weights_only: pickled code in the file never runs; the entries read below are checked
    checkpoint = read_checkpoint(path, "checkpoint")
    name = checkpoint[ckpt.MODEL_NAME]
    options = checkpoint.get(ckpt.CONFIG, {}).get("model", {})
    sizes = {k: options[k] for k in ("min_size", "max_size", "score_thresh", "detections_per_img") if k in options}
    model = build_model(
        name,
        checkpoint[ckpt.NUM_CLASSES],
        weights="none",
        class_names=checkpoint.get(ckpt.CLASS_NAMES),
        backbone=options.get("backbone") or None,
        frozen_bn=False,
        **sizes,
    )
    set_saved_anchors(model, name, options, str(path))
    source = SourceWeights(checkpoint[ckpt.MODEL], None, str(path))
    if _backbone_bn_was_frozen(model, name, source.state):
        freeze_backbone_batchnorm(model, MODELS[name].family)
    load_pretrained(model, name, source, checkpoint.get(ckpt.CLASS_NAMES))
    set_input_normalisation(model, checkpoint.get(ckpt.NORMALISATION))
    model.to(map_location).eval()
    keys = (
        ckpt.MODEL_NAME,
        ckpt.NUM_CLASSES,
        ckpt.CLASS_NAMES,
        ckpt.CATEGORY_IDS,
        ckpt.CONFIG,
        ckpt.EPOCH,
        ckpt.METRICS,
    )
    return model, {k: checkpoint.get(k) for k in keys}
