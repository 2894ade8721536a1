"""Class-balanced sampling: repeat-factor sampling (LVIS, detectron2's RepeatFactorTrainingSampler).

factors = repeat_factors(records.records, threshold=0.3)   # one float >= 1 per image
sampler = RepeatFactorSampler(factors, seed=0)              # len(records) draws an epoch, with replacement
sampler.set_epoch(epoch)

An image holding a class that appears in fewer than ``threshold`` of the training images is drawn more
often; the epoch keeps its length, so LR schedules in steps, the time budget's plan and the sharding under
DDP are the same as with uniform shuffling.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from detect_ft.data.records import ImageRecord


def repeat_factors(records: Sequence[ImageRecord], threshold: float) -> list[float]:
    """One repeat factor per image: ``r_i = max over the classes c in image i of max(1, sqrt(t / f_c))``.

    ``f_c`` is the fraction of all ``records`` (images without boxes included) holding at least one
    non-crowd box of class ``c``. Crowd boxes are left out, as they are never training targets; an
    image without (non-crowd) boxes gets 1, and ``threshold`` 0 gives 1 everywhere.
    """
    n = len(records)
    labels = [r.labels[~r.iscrowd] for r in records]
    counts = [len(image_labels) for image_labels in labels]
    factors = np.ones(n, np.float64)
    if n == 0 or sum(counts) == 0 or threshold <= 0:
        return factors.tolist()
    all_labels = np.concatenate(labels).astype(np.int64)
    span = int(all_labels.max()) + 1
    # One (image, class) pair per class present in an image, however many boxes it has there.
    pairs = np.unique(np.repeat(np.arange(n, dtype=np.int64), counts) * span + all_labels)
    images, classes = pairs // span, pairs % span
    fraction = np.bincount(classes, minlength=span) / n
    class_factor = np.ones(span, np.float64)
    present = fraction > 0
    class_factor[present] = np.maximum(1.0, np.sqrt(threshold / fraction[present]))
    np.maximum.at(factors, images, class_factor[classes])
    return factors.tolist()


def repeat_factors_line(factors: Sequence[float], threshold: float) -> str:
    """The training banner's line about repeat-factor sampling ('' when it is off)."""
    if threshold <= 0:
        return ""
    repeated = sum(1 for f in factors if f > 1)
    largest = max(factors, default=1.0)
    return (
        f"class-balanced sampling (train.repeat_threshold={threshold:g}): {repeated} of {len(factors)} images "
        f"drawn more often, largest repeat factor {largest:.2f}; an epoch stays {len(factors)} draws"
    )


class RepeatFactorSampler(Sampler[int]):
    """``len(factors)`` indices an epoch, drawn with replacement with probabilities proportional to ``factors``.

    The draw is seeded by ``seed + epoch`` (:meth:`set_epoch`), so it is the same on every rank and for
    a resumed run. With ``num_replicas`` > 1 each rank takes its share of that one draw as
    DistributedSampler does: padded with its first indices to a multiple of ``num_replicas`` (or cut
    to one with ``drop_last``), then every ``num_replicas``-th index from ``rank``.
    """

    def __init__(
        self,
        factors: Sequence[float],
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ):
        weights = torch.as_tensor(list(factors), dtype=torch.float64)
        if len(weights) == 0 or not bool(torch.all(weights > 0)) or not bool(torch.all(torch.isfinite(weights))):
            raise ValueError("repeat factors must be a non-empty sequence of finite numbers > 0")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..num_replicas-1, got rank {rank} of {num_replicas}")
        self.weights = weights
        self.seed = seed
        self.epoch = 0
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        n = len(weights)
        self.total_size = (n // num_replicas if drop_last else math.ceil(n / num_replicas)) * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Draw the indices of ``epoch`` next (the same on every rank)."""
        self.epoch = epoch

    def epoch_draw(self) -> list[int]:
        """The whole epoch's draw, before sharding: ``len(factors)`` dataset indices."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_draw()
        if self.total_size > len(indices):
            padding = self.total_size - len(indices)
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        indices = indices[: self.total_size]
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.total_size // self.num_replicas
