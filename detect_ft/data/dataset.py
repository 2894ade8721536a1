"""The torch Dataset over detect-ft records, its collate function and the training/eval loaders.

dataset = DetectionDataset(records, build_transform("light", train=True))
loader = build_loader(dataset, batch_size=8, shuffle=True, workers=2, aspect_ratio_grouping=True)
for images, targets in loader:   # list of (3, H, W) float tensors, list of target dicts
    ...
set_epoch(loader, epoch)         # before each epoch (distributed, repeat factors): every rank draws alike
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from detect_ft.data.checks.findings import UNREADABLE_IMAGE, Finding
from detect_ft.data.image import read_image
from detect_ft.data.paths import without_path
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.data.sampling import RepeatFactorSampler
from detect_ft.utils.errors import DataError

Target = dict[str, torch.Tensor]
LOG = logging.getLogger(__name__)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB array -> (3, H, W) float32 tensor in [0, 1], one copy (the division)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


class DetectionDataset(Dataset):
    """Images and training targets of a split.

    ``__getitem__(i)`` returns ``(image, target)``: image a (3, H, W) float32 tensor in [0, 1], target a
    dict with ``boxes`` (N, 4) float32 xyxy absolute pixels of the (augmented) image, ``labels`` (N,)
    int64 in 1..K and ``image_id`` an int64 scalar tensor. Crowd boxes are left out: they are ignore
    regions for evaluation, never training targets.

    ``transform`` is called as ``transform(image, boxes, labels)``, or with ``extra=`` a list of
    a function returning ``transform.num_extra`` other raw samples when it mixes images (mosaic).

    An image that cannot be decoded when it is loaded (corrupt inside a complete file, or changed since
    the check before training, which reads headers and file ends only) is handled by ``on_unreadable``:
    ``error`` raises :class:`DataError` naming the file; ``drop`` logs one line (a finding, on the
    ``detect_ft.data.dataset`` logger) once per file and run, and serves the next readable image of the
    split in its place (the epoch keeps its length; that image is seen twice). :meth:`findings` lists
    the images left out so far, in every loader worker and epoch.
    """

    def __init__(
        self, records: DatasetRecords, transform: Callable[..., Any] | None = None, on_unreadable: str = "error"
    ):
        if on_unreadable not in ("error", "drop"):
            raise ValueError(f"on_unreadable must be 'error' or 'drop', got {on_unreadable!r}")
        self.records = records
        self.transform = transform
        self.on_unreadable = on_unreadable
        self._rng = random.Random(0)
        # One flag per record in shared memory: loader workers (new ones every epoch) and this process
        # see the same flags, so a file that fails is reported once per run, not once per worker and epoch.
        self._dropped = torch.zeros(len(records.records), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.records)

    def set_seed(self, seed: int) -> None:
        """Seed the choice of extra (mosaic) samples and the transform's generators; loaders call this."""
        self._rng = random.Random(seed)
        set_seed = getattr(self.transform, "set_seed", None)
        if set_seed is not None:
            set_seed(seed)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw sample: image (H, W, 3) uint8 RGB, boxes (N, 4) float32 xyxy, labels (N,) int64, no crowd."""
        return self._load(index)[1:]

    def _load(self, index: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`load` and the index of the record actually served (another one when ``index`` is dropped)."""
        n = len(self.records.records)
        for step in range(n):
            candidate = (index + step) % n
            if self._dropped[candidate]:
                continue
            record = self.records.records[candidate]
            try:
                image = read_image(record.image_path, apply_orientation=record.apply_orientation)
            except DataError as exc:
                if self.on_unreadable == "error":
                    raise DataError(
                        f"{exc} (found while loading training data; data.on_unreadable_image=drop "
                        "leaves such images out)"
                    ) from None
                self._drop(candidate, str(exc))
                continue
            return (candidate, *self._checked(record, image))
        raise DataError(f"{self.records.source}: no image of the split can be decoded; check the image files")

    def _drop(self, index: int, reason: str) -> None:
        """Leave record ``index`` out from now on, saying so once (the first process to flag it logs)."""
        first = not self._dropped[index]
        self._dropped[index] = 1
        if first:
            path = self.records.records[index].image_path
            finding = Finding(UNREADABLE_IMAGE, path, without_path(reason, path), action="dropped image")
            LOG.warning("%s (found while loading training data; data.on_unreadable_image=drop)", finding.describe())

    def findings(self) -> list[Finding]:
        """The images left out while loading so far (``on_unreadable="drop"``), as ``unreadable_image``
        findings with action ``dropped image``, counted over every loader worker and epoch."""
        return [
            Finding(
                UNREADABLE_IMAGE,
                self.records.records[i].image_path,
                "could not be decoded while loading training data",
                action="dropped image",
            )
            for i in torch.nonzero(self._dropped).flatten().tolist()
        ]

    def _checked(self, record: ImageRecord, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if image.shape[:2] != (record.height, record.width):
            raise DataError(
                f"image file {record.image_path} decodes to {image.shape[1]}x{image.shape[0]} but its annotation "
                f"says {record.width}x{record.height}; fix the annotation's size or set data.on_size_mismatch=drop"
            )
        keep = ~record.iscrowd
        return image, record.boxes[keep], record.labels[keep]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        index, image, boxes, labels = self._load(index)
        if self.transform is not None:
            num_extra = getattr(self.transform, "num_extra", 0)
            if num_extra:
                # A function, so the extra images are decoded only when the mixing step actually runs.
                def extra() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
                    return [self.load(self._rng.randrange(len(self))) for _ in range(num_extra)]

                image, boxes, labels = self.transform(image, boxes, labels, extra=extra)
            else:
                image, boxes, labels = self.transform(image, boxes, labels)
        target = {
            "boxes": torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, np.int64).reshape(-1)),
            "image_id": torch.tensor(self.records.records[index].image_id, dtype=torch.int64),
        }
        return image_to_tensor(image), target

    def group_ids(self) -> list[int]:
        """Orientation group per image from the annotated sizes: 0 when width >= height, else 1."""
        return aspect_ratio_groups(self.records.records)


def aspect_ratio_groups(records: Sequence[ImageRecord]) -> list[int]:
    """0 for landscape or square images (w >= h), 1 for portrait ones, like torchvision's two-bin grouping."""
    return [0 if r.width >= r.height else 1 for r in records]


def collate_detection(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep images as a list: detectors take images of different sizes and batch them themselves."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images all share a group (orientation), as torchvision's detection references do.

    Indices come from ``sampler`` in its order and are buffered per group; a batch is yielded as soon as
    a group holds ``batch_size`` of them. At the end the leftover groups are topped up with earlier
    indices of the same group so that every batch is full and ``len`` is exact: ``len(sampler) //
    batch_size`` with ``drop_last``, else ``ceil(len(sampler) / batch_size)``.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        seen: dict[int, list[int]] = {}
        yielded = 0
        expected = len(self)
        for index in self.sampler:
            group = self.group_ids[index]
            buffers.setdefault(group, []).append(index)
            seen.setdefault(group, []).append(index)
            if len(buffers[group]) == self.batch_size:
                yield buffers.pop(group)
                yielded += 1
        leftovers = sorted(buffers.items(), key=lambda item: -len(item[1]))
        for group, batch in leftovers:
            if yielded >= expected:
                break
            pool = seen[group]
            # Repeating a group's own images keeps the batch single-orientation.
            batch = batch + [pool[i % len(pool)] for i in range(self.batch_size - len(batch))]
            yield batch
            yielded += 1

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def _worker_init(worker_id: int) -> None:
    # torch gives each worker base_seed + worker_id, and base_seed comes from the loader's seeded
    # generator, so augmentations are reproducible; albumentations keeps its own generators, so they
    # are seeded here too (they would otherwise be identical copies in every forked worker).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # No cv2.setNumThreads here: in a worker forked after the parent has used OpenCV's thread pool it
    # waits forever for pool threads that did not survive the fork.
    info = torch.utils.data.get_worker_info()
    set_seed = getattr(info.dataset, "set_seed", None) if info is not None else None
    if set_seed is not None:
        set_seed(seed)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    workers: int,
    distributed: bool = False,
    aspect_ratio_grouping: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    repeat_factors: Optional[Sequence[float]] = None,
) -> DataLoader:
    """A DataLoader yielding ``(list of (3,H,W) image tensors, list of target dicts)``.

    ``distributed`` shards with a ``DistributedSampler`` (call :func:`set_epoch` each epoch);
    ``aspect_ratio_grouping`` batches same-orientation images together (``dataset.group_ids()``), which
    saves padding in Faster R-CNN's batched resize. Shuffling and augmentation are seeded from ``seed``.
    ``repeat_factors`` (one per image, :func:`~detect_ft.data.sampling.repeat_factors`; needs ``shuffle``)
    draws each epoch's ``len(dataset)`` images with replacement in proportion to them instead of shuffling.
    """
    generator = torch.Generator().manual_seed(seed)
    if repeat_factors is not None:
        sampler: Sampler[int] = _repeat_factor_sampler(dataset, repeat_factors, shuffle, distributed, seed, drop_last)
    elif distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    if workers == 0 and hasattr(dataset, "set_seed"):
        dataset.set_seed(seed)  # in-process loading: no worker_init to seed the augmentation
    common: dict[str, Any] = dict(
        num_workers=workers,
        collate_fn=collate_detection,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_worker_init if workers > 0 else None,
        persistent_workers=workers > 0,
        generator=generator,
    )
    if aspect_ratio_grouping:
        group_ids = getattr(dataset, "group_ids", None)
        if group_ids is None:
            raise TypeError("aspect_ratio_grouping needs a dataset with group_ids() (a DetectionDataset)")
        batch_sampler = GroupedBatchSampler(sampler, group_ids(), batch_size, drop_last=drop_last)
        return DataLoader(dataset, batch_sampler=batch_sampler, **common)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)


def _repeat_factor_sampler(
    dataset: Dataset, factors: Sequence[float], shuffle: bool, distributed: bool, seed: int, drop_last: bool
) -> RepeatFactorSampler:
    """The per-index sampler of :func:`build_loader` with ``repeat_factors``: this rank's share when distributed."""
    if not shuffle:
        raise ValueError("repeat_factors draws images at random; it needs shuffle=True")
    if len(factors) != len(dataset):
        raise ValueError(f"repeat_factors holds {len(factors)} factors for a dataset of {len(dataset)} images")
    replicas, rank = (torch.distributed.get_world_size(), torch.distributed.get_rank()) if distributed else (1, 0)
    return RepeatFactorSampler(factors, seed=seed, num_replicas=replicas, rank=rank, drop_last=drop_last)


def loader_sampler(loader: DataLoader) -> Sampler:
    """The per-index sampler under ``loader`` (a DistributedSampler when distributed, a RepeatFactorSampler
    with repeat factors), even when grouped."""
    batch_sampler = loader.batch_sampler
    return batch_sampler.sampler if isinstance(batch_sampler, GroupedBatchSampler) else loader.sampler


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a distributed or repeat-factor loader's sampler the epoch, so every rank draws alike; no-op otherwise."""
    sampler = loader_sampler(loader)
    if isinstance(sampler, (DistributedSampler, RepeatFactorSampler)):
        sampler.set_epoch(epoch)
