"""Multi-scale training: each batch at an input size drawn from a list, the configured size everywhere else.

    hook = MultiScale([480, 544, 608], seed=cfg.train.seed)   # train(cfg) adds it for train.multi_scale
    hook.size_for(epoch, step)                               # the size batch ``step`` of ``epoch`` trains at

Torchvision's detectors resize inside the model (``model.transform``, a ``GeneralizedRCNNTransform``):
Faster R-CNN, RetinaNet and FCOS to a short side of ``min_size`` (at most ``max_size`` on the long
side), SSD-style models to a fixed square ``fixed_size``. Given a tuple of ``min_size`` values torchvision
draws one per image from the global generator in training; :class:`MultiScale` instead sets one size per
batch, from its own generator seeded by (seed, epoch, step): the images of a batch share one size (no
padding to the largest), the global random streams are untouched, and a resumed run repeats the sizes.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import torch.nn as nn

from detect_ft.config.values import fail
from detect_ft.engine.distributed import unwrap
from detect_ft.engine.hooks import Hook
from detect_ft.engine.run import Run

InputSize = tuple[Any, Any, Any]  # the transform's (min_size, max_size, fixed_size)


def check_multi_scale(model_name: str, sizes: Sequence[int]) -> None:
    """``train.multi_scale`` must be empty for a model that takes one input size only (SSD300)."""
    from detect_ft.models import MODELS

    spec = MODELS[model_name]
    if sizes and spec.fixed_side is not None:
        fail(
            "train.multi_scale",
            list(sizes),
            f"[] for {model_name}: it takes {spec.fixed_side} px inputs only (its default boxes use fixed pixel "
            "steps); multi-scale training needs a model whose input size may vary (ssdlite, Faster R-CNN, "
            "RetinaNet, FCOS)",
        )


def input_size(model: nn.Module) -> InputSize:
    """The resize settings of ``model.transform``: ``(min_size, max_size, fixed_size)``."""
    transform = unwrap(model).transform
    return transform.min_size, transform.max_size, getattr(transform, "fixed_size", None)


def set_input_size(model: nn.Module, size: int | InputSize) -> None:
    """Resize training images to ``size``: the short side (capped by ``max_size``), or the square side of a
    model with a fixed input (SSD-style); a tuple from :func:`input_size` restores those settings."""
    transform = unwrap(model).transform
    if isinstance(size, tuple):
        transform.min_size, transform.max_size, transform.fixed_size = size
    elif getattr(transform, "fixed_size", None) is not None:
        transform.min_size, transform.max_size, transform.fixed_size = (size,), size, (size, size)
    else:
        transform.min_size = (size,)


class MultiScale(Hook):
    """Trains each batch at a size from ``sizes`` (pixels; see :func:`set_input_size`), drawn by
    :meth:`size_for`, and puts the model's own size back after every batch, so validation, checkpoints
    and export never see a training size."""

    def __init__(self, sizes: Sequence[int], seed: int = 0) -> None:
        if not sizes:
            raise ValueError("MultiScale needs at least one size")
        self.sizes = [int(size) for size in sizes]
        self.seed = seed
        self.configured: InputSize | None = None

    def size_for(self, epoch: int, step: int) -> int:
        """The size batch ``step`` (0-based) of epoch ``epoch`` (0-based) trains at: the same in every run
        with this seed, and on every rank."""
        return random.Random(f"multi_scale/{self.seed}/{epoch}/{step}").choice(self.sizes)

    def before_train(self, run: Run) -> None:
        self.configured = input_size(run.model)

    def before_step(self, run: Run) -> None:
        set_input_size(run.model, self.size_for(run.epoch, run.step))

    def after_step(self, run: Run) -> None:
        self.restore(run)

    def after_train(self, run: Run) -> None:
        self.restore(run)  # a batch that raised skipped after_step

    def restore(self, run: Run) -> None:
        """Give ``run.model`` back the input size it had before training."""
        if self.configured is not None:
            set_input_size(run.model, self.configured)
