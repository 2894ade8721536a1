"""A detector's anchors: reading them, replacing them with the same count per location, fitting them to a split.

torchvision keeps them in ``model.anchor_generator`` (SSD, SSDLite: ``DefaultBoxGenerator``; RetinaNet:
``AnchorGenerator``) or ``model.rpn.anchor_generator`` (Faster R-CNN). The generators hold no tensors
of the state dict, so replacing one leaves every weight as it was; the heads' shapes depend only on the
anchors per location, which :func:`set_anchors` keeps. The values' meaning and the fitting are in
:mod:`detect_ft.data.anchor_fit`. FCOS is anchor-free (its ``AnchorGenerator`` only places one point per
location), so it has nothing to fit.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch.nn as nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

from detect_ft.data.anchor_fit import AnchorFit, AnchorSet, InputResize, box_sizes, suggest_anchors
from detect_ft.utils.errors import ConfigError, DataError
from detect_ft.utils.limits import short_repr

_MAX_VALUE = 1e6  # bounds a value read from a checkpoint; no anchor size or ratio comes near it
ANCHOR_FREE_REASON = "FCOS is anchor-free: it predicts boxes from feature-map points, so it has no anchors to fit"


def has_anchors(name: str) -> bool:
    """Whether model ``name`` (a registry name) places anchors that ``model.anchors`` can fit: every
    registered detector but the ``anchor_free`` ones (the registry's capability field)."""
    from detect_ft.models.registry import MODELS

    spec = MODELS.get(name)
    return spec is not None and not spec.anchor_free


def anchor_generator(model: nn.Module) -> nn.Module:
    """The module that makes ``model``'s anchors (the RPN's for Faster R-CNN)."""
    rpn = getattr(model, "rpn", None)
    return rpn.anchor_generator if rpn is not None else model.anchor_generator


def current_anchors(model: nn.Module) -> AnchorSet:
    """``model``'s anchors now (torchvision's defaults unless :func:`set_anchors` changed them)."""
    generator = anchor_generator(model)
    if isinstance(generator, DefaultBoxGenerator):
        return AnchorSet("ssd", (tuple(generator.scales),), tuple(tuple(r) for r in generator.aspect_ratios))
    return AnchorSet("grid", tuple(map(tuple, generator.sizes)), tuple(map(tuple, generator.aspect_ratios)))


def input_resize(model: nn.Module) -> InputResize:
    """How ``model``'s transform resizes an image (torchvision's ``fixed_size`` is (width, height))."""
    transform = model.transform
    fixed = getattr(transform, "fixed_size", None)
    return InputResize(
        fixed=(int(fixed[0]), int(fixed[1])) if fixed else None,
        min_size=int(transform.min_size[-1]),
        max_size=int(transform.max_size),
    )


def set_anchors(
    model: nn.Module,
    sizes: Optional[Sequence[Sequence[float]]] = None,
    ratios: Optional[Sequence[Sequence[float]]] = None,
    *,
    name: str = "the model",
) -> None:
    """Replace ``model``'s anchor generator by one with these ``sizes`` / ``ratios`` (None or empty: keep
    the current ones), laid out as the model's own (see :mod:`detect_ft.data.anchor_fit`).

    Raises:
        ConfigError: the model is anchor-free, or the values do not have the model's layout (so the heads'
            anchor count per location would change) or are not positive numbers.
    """
    if not sizes and not ratios:
        return
    if isinstance(model, FCOS):
        raise ConfigError(f"model.anchor_sizes / model.anchor_ratios: {name}: {ANCHOR_FREE_REASON}; leave them []")
    current = current_anchors(model)
    wanted = AnchorSet(
        current.kind,
        _checked("model.anchor_sizes", sizes, current.sizes, name, current.kind) if sizes else current.sizes,
        _checked("model.anchor_ratios", ratios, current.ratios, name, current.kind) if ratios else current.ratios,
    )
    generator = anchor_generator(model)
    if current.kind == "ssd":
        new = DefaultBoxGenerator(
            [list(r) for r in wanted.ratios], scales=list(wanted.sizes[0]), steps=generator.steps, clip=generator.clip
        )
    else:
        new = AnchorGenerator(wanted.sizes, wanted.ratios)
    rpn = getattr(model, "rpn", None)
    (rpn if rpn is not None else model).anchor_generator = new


def set_saved_anchors(model: nn.Module, name: str, options: dict, source: str) -> None:
    """Set the anchors a run recorded in its config's ``model`` section (``anchor_sizes``,
    ``anchor_ratios``; absent or [] = the defaults) on ``model``, rebuilt from checkpoint ``source``.

    Raises:
        CheckpointError: the recorded values do not fit ``name``.
    """
    from detect_ft.checkpoint.format import CheckpointError

    try:
        set_anchors(model, options.get("anchor_sizes"), options.get("anchor_ratios"), name=name)
    except ConfigError as exc:
        raise CheckpointError(
            f"checkpoint {source}: the anchors in its config do not fit {name} ({exc}); use a checkpoint "
            "detect-ft wrote for this model"
        ) from None


def _checked(key: str, given: Any, layout: tuple, name: str, kind: str) -> tuple[tuple[float, ...], ...]:
    """``given`` as a tuple of rows of positive floats with the row lengths of ``layout``."""
    lengths = [len(row) for row in layout]
    rows = given if isinstance(given, (list, tuple)) else None
    ok = rows is not None and len(rows) == len(layout)
    ok = ok and all(isinstance(row, (list, tuple)) and len(row) == n for row, n in zip(rows, lengths))
    values = [v for row in rows for v in row] if ok else []
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not ok or not all(0 < v < _MAX_VALUE for v in values):  # comparisons: NaN fails, huge ints don't overflow
        if kind == "ssd" and key.endswith("sizes"):
            shape = f"one list of {lengths[0]} scales (fractions of the input side)"
        else:
            shape = f"{len(layout)} lists (one per feature level) of {lengths} {key.rsplit('_', 1)[1]}"
        raise ConfigError(
            f"config key '{key}': got {short_repr(given)}; {name} needs {shape}, all numbers > 0, so that its "
            "heads keep their anchors per location; or [] for the model's own"
        )
    return tuple(tuple(float(v) for v in row) for row in rows)


def fit_model_anchors(model: nn.Module, records: Iterable) -> AnchorFit:
    """Anchors for ``model`` fitted to the boxes of ``records`` (``ImageRecord``s) at the model's input
    size, and the coverage of its current and the fitted anchors.

    Raises:
        DataError: the records hold no box to fit to.
    """
    resize = input_resize(model)
    wh = box_sizes(records, resize)
    if not len(wh):
        raise DataError(
            "model.anchors=auto: the training split has no boxes (other than crowd boxes) to fit anchors to; "
            "set model.anchors=default"
        )
    return suggest_anchors(wh, current_anchors(model), resize.fixed or (1, 1))


def fit_and_set_anchors(model: nn.Module, name: str, records: Iterable) -> AnchorFit:
    """:func:`fit_model_anchors`, then set the fitted anchors on ``model`` (model ``name``)."""
    fit = fit_model_anchors(model, records)
    sizes, ratios = fit.fitted.config_values()
    set_anchors(model, sizes, ratios, name=name)
    return fit
