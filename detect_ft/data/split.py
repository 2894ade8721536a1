"""Where a dataset's splits live and how their problems are handled: :class:`SplitSpec`, and the one way
to load a checked split, :func:`load_checked_split`.

    spec = SplitSpec.from_config(cfg.data)
    train, report = load_checked_split(spec, cfg.data.train, cfg.data.classes)
    val, _ = load_checked_split(spec, cfg.data.val, train.class_names, decode=True)

Training, evaluation, export and the benchmark tools all label a split in a given class order (the
model's, or the training split's) with the same ``data.on_*`` policies; this module is that one path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from detect_ft.data.checks.doctor import Report, check_split, prepare_split
from detect_ft.data.checks.findings import POLICY_KEYS, resolve_policies
from detect_ft.data.records import DatasetRecords


@dataclass(frozen=True)
class SplitSpec:
    """The data options every split of a dataset shares (everything but the split and the class list).

    Attributes:
        format: ``coco``, ``voc`` or ``yolo``.
        root: dataset folder; relative splits and ``images`` are resolved against it.
        images: coco only: the folder ``file_name`` entries are relative to ("" = the JSON's folder).
        keep_background: keep images without boxes.
        policies: ``{on_<kind>: policy}`` for every kind of finding (missing keys given take the defaults
            of :data:`detect_ft.data.checks.findings.DEFAULT_POLICIES`; unknown keys or values raise ValueError).
    """

    format: str
    root: str | os.PathLike = ""
    images: str = ""
    keep_background: bool = True
    policies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # resolved here, so every reader sees all kinds, and a copy, so the caller's dict cannot change it
        object.__setattr__(self, "policies", resolve_policies(self.policies))

    @classmethod
    def from_config(cls, data: Any) -> SplitSpec:
        """The spec of a ``detect_ft.config.schema.DataConfig`` (read by attribute: data does not import config)."""
        policies = {key: getattr(data, key) for key in POLICY_KEYS.values()}
        return cls(
            format=data.format,
            root=data.root,
            images=data.images,
            keep_background=data.keep_background,
            policies=policies,
        )


def _arguments(spec: SplitSpec, split: str, classes: Optional[Sequence[str]], decode: bool) -> dict[str, Any]:
    """The doctor's keyword arguments for ``split`` of ``spec`` (no classes given: the dataset's own)."""
    return dict(
        format=spec.format,
        root=spec.root,
        split=split,
        images=spec.images,
        classes=list(classes) if classes else None,
        keep_background=spec.keep_background,
        policies=spec.policies,
        decode=decode,
    )


def load_checked_split(
    spec: SplitSpec, split: str, classes: Optional[Sequence[str]], *, decode: bool = False
) -> tuple[DatasetRecords, Report]:
    """Load ``split`` (data.train / data.val), check it with the doctor and apply ``spec.policies``.

    Args:
        spec: the dataset's options (:meth:`SplitSpec.from_config`).
        split: coco: annotation JSON; voc: split name or list file; yolo: split folder or list file.
        classes: the class order to label in (label k = classes[k-1]): the model's ``class_names`` for
            evaluation, the training split's for validation; None or empty: the dataset's own names.
        decode: decode every image strictly (also finds corrupt data inside complete files, handled
            by ``data.on_unreadable_image``) instead of the cheap check (headers, sizes, and the end
            marker that files cut short lack; no decoding).

    Returns:
        The cleaned records (boxes float32 xyxy, absolute pixels) and the doctor's Report.

    Raises:
        DataError: a malformed annotation file, findings at policy ``error``, or no image left.
    """
    return prepare_split(**_arguments(spec, split, classes, decode))


def report_split(
    spec: SplitSpec, split: str, classes: Optional[Sequence[str]], *, decode: bool = False
) -> tuple[DatasetRecords, Report]:
    """As :func:`load_checked_split`, but findings at policy ``error`` are reported, not raised (check-data)."""
    return check_split(**_arguments(spec, split, classes, decode))
