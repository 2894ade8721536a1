"""The dataset doctor: find problems in a split's records, apply the per-kind policies, report.

    records, report = prepare_split(format="voc", root="data/VOC2007", split="trainval", images="",
                                    classes=None, keep_background=True, policies={"on_box_outside": "clip"})

:func:`prepare_split` (through :func:`detect_ft.data.split.load_checked_split`, which takes the options as
one ``SplitSpec``) is what training, evaluation and export call: it loads (``load_split``), checks the image
files (fast: header sizes, EXIF orientation and the end marker of files cut short; ``decode=True`` decodes
every image strictly, to find corrupt ones too), checks every box (also against its class's typical size), applies the
policies and raises :class:`DataError` listing the findings at policy ``error``.
:func:`check_split` does the same without raising, for ``detect-ft check-data``.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from detect_ft.data.checks.findings import (
    BOX_OUTSIDE,
    DEGENERATE_BOX,
    DUPLICATE_BOX,
    EXIF_ORIENTATION,
    MISSING_IMAGE,
    SIZE_MISMATCH,
    SMALL_BOX,
    SMALL_BOX_MIN_BOXES,
    SMALL_BOX_RATIO,
    UNREADABLE_IMAGE,
    Finding,
    format_errors,
    policy_for,
    resolve_policies,
)
from detect_ft.data.image import ImageInfo, MissingImageError, read_image, read_image_info
from detect_ft.data.load import load_split
from detect_ft.data.paths import without_path
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.utils.errors import DataError

# Boxes may reach this far (pixels) past the border before they count as outside: float32 rounding of
# coordinates written as exact edges must not flood reports.
OUTSIDE_TOLERANCE = 1e-3


@dataclass
class Report:
    """What the doctor found in one split and what it did about it.

    ``images``/``boxes`` count the records as loaded (after the adapter left out unknown classes),
    ``kept_images``/``kept_boxes`` what remains after the policies.
    """

    source: str
    findings: list[Finding] = field(default_factory=list)
    images: int = 0
    boxes: int = 0
    kept_images: int = 0
    kept_boxes: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.action == "error"]

    def counts(self) -> dict[str, int]:
        """Number of findings per kind."""
        return dict(Counter(f.kind for f in self.findings))


@dataclass(frozen=True)
class FileStatus:
    """What the file check found: the header's :class:`ImageInfo`, or a problem ``(kind, message)``."""

    info: Optional[ImageInfo] = None
    problem: Optional[tuple[str, str]] = None


def image_file_status(path: str, decode: bool = False) -> FileStatus:
    """The header (size, EXIF orientation) of a readable image file, else what is wrong with it.

    Without ``decode`` the check is cheap (no pixels decoded): the file exists, its header parses, and a
    JPEG ends with its end marker, a PNG with its IEND chunk (only the last bytes are read), which finds
    files cut short. With ``decode`` the pixels are decoded too, strictly
    (:func:`detect_ft.data.image.read_image`, as training and evaluation decode), which also finds
    corrupt data inside a complete file.
    """
    try:
        info = read_image_info(path, check_end=not decode)
        if decode:
            read_image(path, apply_orientation=False)
    except DataError as exc:
        kind = MISSING_IMAGE if isinstance(exc, MissingImageError) else UNREADABLE_IMAGE
        return FileStatus(problem=(kind, without_path(str(exc), path)))
    return FileStatus(info=info)


def check_images(records: list[ImageRecord], decode: bool = False, workers: int = 8) -> list[FileStatus]:
    """:func:`image_file_status` of every record's image, in order (threads: PIL and OpenCV release the GIL).

    Shows a progress bar on a terminal (tqdm's ``disable=None``: never in logs or tests)."""
    from tqdm import tqdm

    if not records:
        return []
    what = "decode images" if decode else "read image headers"
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(records)))) as pool:
        statuses = pool.map(lambda r: image_file_status(r.image_path, decode), records)
        return list(tqdm(statuses, total=len(records), desc=what, unit="img", disable=None, leave=False))


def small_box_thresholds(records: DatasetRecords) -> dict[int, float]:
    """{label: sqrt(area) below which a box of that class is suspiciously small} for the split.

    The typical size of a class is the median sqrt(w*h) of its valid, non-crowd boxes; classes with
    fewer than ``SMALL_BOX_MIN_BOXES`` boxes have no typical size and no threshold.
    """
    sizes: dict[int, list[np.ndarray]] = {}
    for record in records.records:
        boxes = record.boxes.astype(np.float64)
        with np.errstate(invalid="ignore"):
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            ok = np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0) & ~record.iscrowd
        for label in np.unique(record.labels[ok]):
            pick = ok & (record.labels == label)
            sizes.setdefault(int(label), []).append(np.sqrt(w[pick] * h[pick]))
    thresholds = {}
    for label, parts in sizes.items():
        values = np.concatenate(parts)
        if len(values) >= SMALL_BOX_MIN_BOXES:
            thresholds[label] = SMALL_BOX_RATIO * float(np.median(values))
    return thresholds


def box_problems(record: ImageRecord, small_thresholds: Optional[dict[int, float]] = None) -> dict[str, np.ndarray]:
    """Boolean masks (N,) per kind over the record's boxes: degenerate, outside, duplicate, small.

    Degenerate: non-finite coordinates or width/height <= 0. Outside: finite, not degenerate, reaching
    past the image border (annotated width/height). Duplicate: equal coordinates and label to an
    earlier box of the same image (the first copy is not flagged). Small: sqrt(w*h) below its class's
    threshold in ``small_thresholds`` (see :func:`small_box_thresholds`; none given: nothing is small).
    """
    boxes = record.boxes.astype(np.float64)
    n = len(boxes)
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        degenerate = ~finite | ~(boxes[:, 2] > boxes[:, 0]) | ~(boxes[:, 3] > boxes[:, 1])
        t = OUTSIDE_TOLERANCE
        outside = ~degenerate & (
            (boxes[:, 0] < -t)
            | (boxes[:, 1] < -t)
            | (boxes[:, 2] > record.width + t)
            | (boxes[:, 3] > record.height + t)
        )
    duplicate = np.zeros(n, bool)
    seen: set[tuple] = set()
    for i in np.flatnonzero(~degenerate):
        key = (*record.boxes[i].tolist(), int(record.labels[i]))
        duplicate[i] = key in seen
        seen.add(key)
    small = np.zeros(n, bool)
    if small_thresholds:
        with np.errstate(invalid="ignore"):
            side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        limit = np.array([small_thresholds.get(int(label), 0.0) for label in record.labels])
        small = ~degenerate & ~record.iscrowd & (side < limit)
    return {DEGENERATE_BOX: degenerate, BOX_OUTSIDE: outside, DUPLICATE_BOX: duplicate, SMALL_BOX: small}


_BOX_MESSAGES = {
    DEGENERATE_BOX: "box has zero or negative width/height or a non-finite coordinate",
    DUPLICATE_BOX: "exact duplicate of an earlier box with the same label",
}


_EXIF_MEANING = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped upside down",
    5: "transposed",
    6: "rotated 90 degrees clockwise",
    7: "transversed",
    8: "rotated 90 degrees counter-clockwise",
}


def _exif_finding(record: ImageRecord, info: ImageInfo, policy: str) -> Finding:
    square = " (a square image: its size cannot tell the two frames apart)" if info.width == info.height else ""
    message = (
        f"EXIF orientation {info.orientation}: the stored {info.width}x{info.height} pixels are shown "
        f"{_EXIF_MEANING[info.orientation]}, and the boxes may be drawn in either frame{square}"
    )
    action = {
        "error": "error",
        "drop": "dropped image",
        "apply": "applied (boxes taken in the displayed frame)",
        "ignore": "ignored (boxes taken in the stored pixel frame)",
    }[policy]
    return Finding(EXIF_ORIENTATION, record.image_path, message, action=action)


def clean_record(
    record: ImageRecord,
    status: Optional[FileStatus],
    policies: dict[str, str],
    small_thresholds: Optional[dict[int, float]] = None,
) -> tuple[Optional[ImageRecord], list[Finding]]:
    """Apply the policies to one record; ``status`` is :func:`image_file_status` (None: not checked).

    Returns the cleaned record (None when the image is dropped) and the findings with their action.
    Boxes whose policy is ``error`` (or ``keep``) are left as they are (the caller stops anyway).
    """
    findings, dropped = _file_findings(record, status, policies)
    if dropped:
        return None, findings
    keep, boxes, box_findings = _box_findings(record, policies, small_thresholds)
    cleaned = record.select(keep)
    cleaned.boxes = boxes[keep]
    return cleaned, findings + box_findings


def _file_findings(
    record: ImageRecord, status: Optional[FileStatus], policies: dict[str, str]
) -> tuple[list[Finding], bool]:
    """The image file's findings (unreadable, orientation tag, size) and whether the image is dropped."""
    findings: list[Finding] = []
    path = record.image_path
    if status is None:
        return findings, False
    if status.problem is not None:
        kind, message = status.problem
        policy = policy_for(kind, policies)
        findings.append(Finding(kind, path, message, action="error" if policy == "error" else "dropped image"))
        return findings, policy == "drop"
    info = status.info
    if info.rotated:
        policy = policy_for(EXIF_ORIENTATION, policies)
        findings.append(_exif_finding(record, info, policy))
        if policy == "drop":
            return findings, True
    size = info.size(record.apply_orientation)
    if size != (record.width, record.height):
        policy = policy_for(SIZE_MISMATCH, policies)
        message = f"annotated size {record.width}x{record.height} but the file is {size[0]}x{size[1]}"
        if info.rotated:
            message += " in the frame data.on_exif_orientation chose"
        findings.append(Finding(SIZE_MISMATCH, path, message, action="error" if policy == "error" else "dropped image"))
        return findings, policy == "drop"
    return findings, False


def _box_message(kind: str, record: ImageRecord, i: int, small_thresholds: Optional[dict[int, float]]) -> str:
    if kind == BOX_OUTSIDE:
        return f"box reaches outside the {record.width}x{record.height} image"
    if kind == SMALL_BOX:
        x1, y1, x2, y2 = record.boxes[i].tolist()
        label = int(record.labels[i])
        typical = small_thresholds[label] / SMALL_BOX_RATIO
        return (
            f"{x2 - x1:.3g}x{y2 - y1:.3g} px box, far smaller than the {typical:.0f} px typical of its class "
            f"(label {label}); a stray click or a unit mistake?"
        )
    return _BOX_MESSAGES[kind]


def _box_findings(
    record: ImageRecord, policies: dict[str, str], small_thresholds: Optional[dict[int, float]]
) -> tuple[np.ndarray, np.ndarray, list[Finding]]:
    """Apply the box policies: ``(keep (N,) bool, boxes (N, 4) xyxy with clipped ones clipped, findings)``."""
    masks = box_problems(record, small_thresholds)
    boxes = record.boxes.copy()
    keep = np.ones(len(boxes), bool)
    findings = []
    for kind in (DEGENERATE_BOX, BOX_OUTSIDE, DUPLICATE_BOX, SMALL_BOX):
        policy = policy_for(kind, policies)
        for i in np.flatnonzero(masks[kind]):
            action = {"error": "error", "drop": "dropped box", "clip": "clipped", "keep": "kept"}[policy]
            if policy == "drop":
                keep[i] = False
            elif policy == "clip":
                clipped = np.clip(boxes[i], 0, [record.width, record.height, record.width, record.height])
                boxes[i] = clipped
                if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
                    keep[i] = False
                    action = "dropped box (nothing left inside the image after clipping)"
            message = _box_message(kind, record, i, small_thresholds)
            findings.append(Finding(kind, record.image_path, message, int(i), record.boxes[i].tolist(), action))
    return keep, boxes, findings


def check_records(
    records: DatasetRecords,
    policies: Optional[dict[str, str]] = None,
    decode: bool = False,
    keep_background: bool = True,
    check_files: bool = True,
) -> tuple[DatasetRecords, Report]:
    """Check loaded records and apply ``policies`` (``on_<kind>`` keys, defaults as in DataConfig).

    Never raises for findings; the returned Report lists them with their action.
    """
    policies = resolve_policies(policies)
    statuses = check_images(records.records, decode) if check_files else [None] * len(records)
    report = Report(source=records.source, images=len(records), boxes=records.num_boxes)
    thresholds = small_box_thresholds(records)
    kept = []
    for record, status in zip(records.records, statuses):
        cleaned, findings = clean_record(record, status, policies, thresholds)
        report.findings += findings
        if cleaned is not None and (keep_background or cleaned.num_boxes):
            kept.append(cleaned)
    out = DatasetRecords(kept, list(records.class_names), list(records.category_ids), records.source)
    report.kept_images, report.kept_boxes = len(out), out.num_boxes
    return out, report


def check_split(
    *,
    format: str,
    root: str | os.PathLike,
    split: str,
    images: str = "",
    classes: Optional[list[str]] = None,
    keep_background: bool = True,
    policies: Optional[dict[str, str]] = None,
    decode: bool = False,
) -> tuple[DatasetRecords, Report]:
    """:func:`load_split` + :func:`check_records`; findings at ``error`` are reported, not raised."""
    policies = resolve_policies(policies)
    records, load_findings = load_split(
        format=format,
        root=root,
        split=split,
        images=images,
        classes=classes,
        keep_background=keep_background,
        allow_outside_root=policies["on_outside_root"] == "allow",
        apply_orientation=policies["on_exif_orientation"] != "ignore",
    )
    for finding in load_findings:
        # the adapter has already left these boxes/images out of the records (allowed paths excepted)
        policy = policy_for(finding.kind, policies)
        dropped = "dropped box" if finding.box is not None else "dropped image"
        finding.action = {"error": "error", "allow": "allowed"}.get(policy, dropped)
    cleaned, report = check_records(records, policies, decode, keep_background)
    report.findings = load_findings + report.findings
    return cleaned, report


def prepare_split(
    *,
    format: str,
    root: str | os.PathLike,
    split: str,
    images: str,
    classes: Optional[list[str]],
    keep_background: bool,
    policies: dict[str, str],
    decode: bool = False,
) -> tuple[DatasetRecords, Report]:
    """Load, check and clean a split for training or evaluation.

    Args: as :func:`detect_ft.data.load.load_split`, plus ``policies`` ({``on_<kind>``: error|drop|clip},
    the DataConfig keys; missing keys take the defaults) and ``decode`` (decode every image instead of
    the cheap check of headers, sizes and file ends; see :func:`image_file_status`). When ``data.classes`` is set, pass the training split's
    ``class_names`` as ``classes`` for the validation split.

    Returns:
        The cleaned records (boxes float32 xyxy, absolute pixels) and the Report.

    Raises:
        DataError: a malformed annotation file, or findings at policy ``error`` (the first ten listed,
        then a count, and the config keys that would leave them out).
    """
    records, report = check_split(
        format=format,
        root=root,
        split=split,
        images=images,
        classes=classes,
        keep_background=keep_background,
        policies=policies,
        decode=decode,
    )
    if report.errors:
        raise DataError(format_errors(report.errors, report.source))
    if not records.records:
        raise DataError(f"{report.source}: no images left after applying the data.on_* policies; check the data")
    return records, report
