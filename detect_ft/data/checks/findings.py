"""Dataset problems found by the adapters and the doctor, and the per-kind policies applied to them.

A :class:`Finding` names the file, the box (index and xyxy coordinates, absolute pixels) and what is
wrong. Each kind is governed by one ``data.on_<kind>`` config key whose value is ``error`` (stop),
``drop`` (remove the box or image) or ``clip`` (boxes outside the image only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

MISSING_IMAGE = "missing_image"  # the image file does not exist
UNREADABLE_IMAGE = "unreadable_image"  # exists but cannot be decoded: corrupt, truncated, over the pixel limit
EXIF_ORIENTATION = "exif_orientation"  # an EXIF tag rotates/mirrors the pixels: which frame are the boxes in?
OUTSIDE_ROOT = "outside_root"  # the annotation's image path is absolute or leaves data.root
SIZE_MISMATCH = "size_mismatch"  # annotated size differs from the file's size
DEGENERATE_BOX = "degenerate_box"  # zero/negative width or height, NaN or inf
BOX_OUTSIDE = "box_outside"  # box reaches outside the image
DUPLICATE_BOX = "duplicate_box"  # exact copy of an earlier box of the same image and label
SMALL_BOX = "small_box"  # far smaller than the class's typical box: often a stray click or a unit mistake
UNKNOWN_CLASS = "unknown_class"  # class name/id not in the class list, or one that would map to background

KINDS = (
    MISSING_IMAGE,
    UNREADABLE_IMAGE,
    EXIF_ORIENTATION,
    OUTSIDE_ROOT,
    SIZE_MISMATCH,
    DEGENERATE_BOX,
    BOX_OUTSIDE,
    DUPLICATE_BOX,
    SMALL_BOX,
    UNKNOWN_CLASS,
)

# The one definition of the data.on_* policies: detect_ft.config.schema builds DataConfig's fields (defaults,
# allowed values, messages) from these tables, so a new kind or choice is added here only.

# config key (data.<key>) for each kind; policy dicts are keyed by these names
POLICY_KEYS: dict[str, str] = {kind: f"on_{kind}" for kind in KINDS}

DEFAULT_POLICIES: dict[str, str] = {
    "on_missing_image": "error",
    "on_unreadable_image": "error",
    "on_exif_orientation": "error",
    "on_outside_root": "error",
    "on_size_mismatch": "error",
    "on_degenerate_box": "drop",
    "on_box_outside": "clip",
    "on_duplicate_box": "drop",
    "on_small_box": "keep",
    "on_unknown_class": "error",
}

# which policies make sense for which kind: only boxes that stick out can be clipped; a tagged image's
# boxes are in the rotated frame (apply) or the stored one (ignore); a path outside data.root may be
# allowed; a small box may be kept (reported only)
ALLOWED: dict[str, tuple[str, ...]] = {kind: ("error", "drop") for kind in KINDS}
ALLOWED[BOX_OUTSIDE] = ("error", "drop", "clip")
ALLOWED[EXIF_ORIENTATION] = ("error", "drop", "apply", "ignore")
ALLOWED[OUTSIDE_ROOT] = ("error", "drop", "allow")
ALLOWED[SMALL_BOX] = ("keep", "drop", "error")

# a box is "small" when sqrt(w*h) is below this fraction of its class's median sqrt(w*h) in the split,
# for classes with at least SMALL_BOX_MIN_BOXES boxes (a 1x1 box among 100 px boxes; 10x smaller)
SMALL_BOX_RATIO = 0.1
SMALL_BOX_MIN_BOXES = 4


@dataclass
class Finding:
    """One problem. ``box`` is xyxy in absolute pixels (as loaded), ``box_index`` its index in the image.

    ``action`` is filled in when a policy is applied: ``error``, ``dropped box``, ``dropped image``,
    ``clipped``, ``kept`` (reported only), ``allowed``, or what was done about an orientation tag.
    """

    kind: str
    file: str
    message: str
    box_index: Optional[int] = None
    box: Optional[Sequence[float]] = None
    action: str = ""

    def describe(self) -> str:
        where = self.file
        if self.box_index is not None:
            where += f" box {self.box_index}"
        if self.box is not None:
            where += " [" + ", ".join(_num(v) for v in self.box) + "]"
        action = f" -> {self.action}" if self.action else ""
        return f"{self.kind}: {where}: {self.message}{action}"


def _num(value: float) -> str:
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def resolve_policies(policies: dict[str, str] | None) -> dict[str, str]:
    """Defaults overridden by ``policies`` (keys ``on_<kind>`` as in DataConfig); checked.

    Raises ValueError for unknown keys or values: these come from code, the config was checked already.
    """
    resolved = dict(DEFAULT_POLICIES)
    for key, value in (policies or {}).items():
        if key not in resolved:
            raise ValueError(f"unknown policy key {key!r}; expected one of {sorted(resolved)}")
        resolved[key] = value
    for kind, key in POLICY_KEYS.items():
        if resolved[key] not in ALLOWED[kind]:
            raise ValueError(f"policy {key}={resolved[key]!r} is not one of {ALLOWED[kind]}")
    return resolved


def policy_choices(kind: str, given: object = None) -> str:
    """The allowed values of ``data.on_<kind>``, for a message refusing ``given``.

    A value allowed for another kind says why it is not allowed here (only boxes outside the image can
    be clipped).
    """
    allowed = ALLOWED[kind]
    if given == "clip" and "clip" not in allowed:
        return f"{', '.join(allowed[:-1])} or {allowed[-1]} (only boxes outside the image can be clipped)"
    return ", ".join(allowed)


def policy_for(kind: str, policies: dict[str, str]) -> str:
    return policies[POLICY_KEYS[kind]]


def summarize(findings: Sequence[Finding]) -> str:
    """``"3 findings handled by the data.on_* policies: 1 unreadable_image (dropped image), 2 box_outside
    (clipped)"``: counts per kind and action, in order of first appearance, for one-line banners."""
    if not findings:
        return "no findings for the data.on_* policies"
    counts: dict[tuple[str, str], int] = {}
    for finding in findings:
        key = (finding.kind, finding.action)
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{n} {kind}" + (f" ({action})" if action else "") for (kind, action), n in counts.items()]
    noun = "finding" if len(findings) == 1 else "findings"
    return f"{len(findings)} {noun} handled by the data.on_* policies: " + ", ".join(parts)


def format_errors(findings: list[Finding], source: str, limit: int = 10) -> str:
    """The DataError message for findings at policy ``error``: the first ``limit``, then a count."""
    kinds = sorted({f.kind for f in findings})
    lines = [f"{len(findings)} dataset problem(s) at policy 'error' in {source}:"]
    lines += ["  " + f.describe() for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more (run `detect-ft check-data` for all)")
    keys = ", ".join(f"data.{POLICY_KEYS[k]}=drop" for k in kinds)
    lines.append(f"fix the files, or set {keys} to leave them out" + _other_choices(kinds))
    return "\n".join(lines)


def _other_choices(kinds: list[str]) -> str:
    notes = []
    if EXIF_ORIENTATION in kinds:
        notes.append(
            "data.on_exif_orientation=apply if the boxes were drawn on the rotated (displayed) image, "
            "=ignore if on the stored pixels"
        )
    if OUTSIDE_ROOT in kinds:
        notes.append("data.on_outside_root=allow to read images outside data.root")
    return ("; or set " + "; ".join(notes)) if notes else ""
