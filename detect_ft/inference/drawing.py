"""Drawing detections on an image and writing RGB images: what ``Result.plot``/``save`` and ``predict`` show.

Torch-free (numpy and OpenCV). Boxes are xyxy in the image's pixels; labels are 1..K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from detect_ft.utils.atomic_io import atomic_path
from detect_ft.utils.errors import DetectFTError


def draw_detections(image: np.ndarray, detections: dict, class_names: Sequence[str]) -> np.ndarray:
    """A copy of the RGB uint8 ``image`` with each box (xyxy pixels) drawn and labelled ``name score``."""
    out = np.ascontiguousarray(image).copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for box, score, label in zip(detections["boxes"], detections["scores"], detections["labels"]):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = _color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        text = f"{class_names[int(label) - 1]} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(y1 - th - base, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), color, -1)
        cv2.putText(out, text, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _color(label: int) -> tuple[int, int, int]:
    # Golden-ratio hue steps keep neighbouring labels' colours far apart.
    hue = int((label * 0.618034 % 1.0) * 179)
    rgb = cv2.cvtColor(np.uint8([[[hue, 200, 220]]]), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(c) for c in rgb)


def write_rgb_image(target: Path, image: np.ndarray) -> Path:
    """Write the RGB uint8 ``image`` to ``target`` atomically, in the format its suffix names (PNG without one)."""
    ok, data = cv2.imencode(target.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DetectFTError(f"OpenCV could not encode {target}; use a .jpg or .png file name")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data.tobytes())
    return target
