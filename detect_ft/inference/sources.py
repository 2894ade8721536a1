"""What ``predict`` reads: an image file, a folder, a glob, a video, an in-memory image, or a list of them.

Torch-free (numpy and OpenCV). :func:`iter_frames` yields :class:`Frame` s one at a time, so a long video
or a large folder is never held in memory; :func:`count_frames` sizes a progress bar beforehand.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from detect_ft.data.image import read_image
from detect_ft.data.image_header import IMAGE_SUFFIXES, check_pixels
from detect_ft.utils.errors import ArgumentTypeError, DetectFTError
from detect_ft.utils.limits import short_repr

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
Source = Union[str, os.PathLike, np.ndarray, Sequence[Union[str, os.PathLike, np.ndarray]]]
_SOURCE_TYPES = "an image/folder/glob/video path, an RGB uint8 array (H, W, 3) or a list of them"


@dataclass
class Frame:
    """One image to predict: RGB uint8 ``image`` (H, W, 3); ``path`` its file (None in memory);
    ``frame`` the 0-based frame number within a video (None for images); ``fps`` the video's rate."""

    image: np.ndarray
    path: Optional[str] = None
    frame: Optional[int] = None
    fps: Optional[float] = None


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def expand_source(source: Source) -> list[Union[Path, np.ndarray]]:
    """The source as a flat list of image/video paths and in-memory images (folders and globs expanded).

    Raises:
        DetectFTError: a path that does not exist, a glob that matches nothing, an unknown file type, or
            an array that is not an (H, W, 3) uint8 image of at least one pixel.
        ArgumentTypeError: a source (or an item of a list) that is no path, array or list.
    """
    if isinstance(source, np.ndarray) or isinstance(source, (str, os.PathLike)):
        source = [source]
    if not isinstance(source, Iterable) or isinstance(source, (bytes, dict)):
        raise ArgumentTypeError(f"source must be {_SOURCE_TYPES}, got {type(source).__name__} {short_repr(source)}")
    items: list[Union[Path, np.ndarray]] = []
    for index, item in enumerate(source):
        if not isinstance(item, (np.ndarray, str, os.PathLike)):
            raise ArgumentTypeError(
                f"source item {index} must be an image path or an RGB uint8 array (H, W, 3), got "
                f"{type(item).__name__} {short_repr(item)}"
            )
        if isinstance(item, np.ndarray):
            items.append(_checked_array(item))
            continue
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            items += list_images(path)
        elif path.is_file():
            items.append(_checked_file(path))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            matches = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
            if not matches:
                raise DetectFTError(f"source {text} matches no image or video files; check the pattern")
            items += matches
        else:
            raise DetectFTError(f"source {text} does not exist; pass an image, a folder, a glob or a video")
    return items


def iter_frames(source: Source) -> Iterator[Frame]:
    """Every image and video frame of ``source``, in order, decoded to RGB uint8 (EXIF orientation applied).

    Images are read strictly (:func:`detect_ft.data.image.read_image`): a truncated or undecodable file,
    or an image or video frame over :data:`detect_ft.utils.limits.MAX_IMAGE_PIXELS` (checked from the file
    header or the video container before decoding), raises :class:`DetectFTError` naming it.
    """
    for item in expand_source(source):
        if isinstance(item, np.ndarray):
            yield Frame(image=item)
        elif is_video(item):
            yield from _video_frames(item)
        else:
            yield Frame(image=read_image(item), path=str(item))


def count_frames(source: Source) -> Optional[int]:
    """How many frames :func:`iter_frames` will yield (videos by their header; None when unknown)."""
    import cv2

    total = 0
    for item in expand_source(source):
        if isinstance(item, Path) and is_video(item):
            capture = cv2.VideoCapture(os.fspath(item))
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            capture.release()
            if frames <= 0:
                return None
            total += frames
        else:
            total += 1
    return total


def _video_frames(path: Path) -> Iterator[Frame]:
    import cv2

    capture = cv2.VideoCapture(os.fspath(path))
    if not capture.isOpened():
        raise DetectFTError(f"video {path} cannot be opened by OpenCV; re-encode it as an H.264 or MJPEG .mp4/.avi")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    index = 0
    try:
        # the container states the frame size: checked before a frame is decoded, and each frame after
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        check_pixels(f"video {path}: each frame", *size)
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            check_pixels(f"video {path}: frame {index}", frame.shape[1], frame.shape[0])
            yield Frame(image=cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), path=str(path), frame=index, fps=float(fps))
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise DetectFTError(f"video {path} has no readable frames; re-encode it")


def _checked_file(path: Path) -> Path:
    if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise DetectFTError(
            f"source {path}: unknown file type {path.suffix!r}; pass an image "
            f"({', '.join(IMAGE_SUFFIXES)}), a folder, a glob or a video ({', '.join(VIDEO_SUFFIXES)})"
        )
    return path


def _checked_array(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DetectFTError(
            f"an in-memory image must be an RGB uint8 array (H, W, 3), got {image.dtype} "
            f"{tuple(image.shape)}; convert it, e.g. cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DetectFTError(f"an in-memory image of shape {tuple(image.shape)} has no pixels; pass an image")
    check_pixels("an in-memory image", image.shape[1], image.shape[0])
    return image
