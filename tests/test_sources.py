"""What predict reads: files, folders, globs, videos, arrays and lists of them; bad sources get clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import flat_image

from detect_ft.inference.sources import count_frames, expand_source, iter_frames
from detect_ft.utils.errors import DetectFTError


def _video(path, frames=3):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (32, 24))
    for i in range(frames):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    return path


def test_folder_glob_file_and_list(tmp_path):
    a, b = flat_image(tmp_path / "b.png", 32, 24, value=10), flat_image(tmp_path / "a.jpg", 32, 24, value=10)
    (tmp_path / "notes.txt").write_text("not an image")
    assert expand_source(tmp_path) == [b, a]  # sorted by name, non-images skipped
    assert expand_source(str(tmp_path / "*.png")) == [a]
    array = np.zeros((5, 6, 3), np.uint8)
    items = expand_source([a, array])
    assert items[0] == a and items[1] is array
    frames = list(iter_frames([a, array]))
    assert frames[0].path == str(a) and frames[0].image.shape == (24, 32, 3) and frames[1].path is None


def test_video_frames_are_numbered(tmp_path):
    video = _video(tmp_path / "clip.mp4")
    frames = list(iter_frames(video))
    assert [f.frame for f in frames] == [0, 1, 2] and all(f.path == str(video) for f in frames)
    assert frames[0].fps == pytest.approx(5.0)
    assert count_frames([video, flat_image(tmp_path / "x.png", 32, 24, value=10)]) == 4


@pytest.mark.parametrize(
    "bad, message",
    [
        ("missing.jpg", "does not exist"),
        ("*.nothing", "matches no image"),
        ("notes.txt", "unknown file type"),
    ],
)
def test_bad_sources(tmp_path, bad, message):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DetectFTError, match=message):
        expand_source(str(tmp_path / bad))


def test_arrays_must_be_rgb_uint8():
    with pytest.raises(DetectFTError, match="RGB uint8"):
        expand_source(np.zeros((4, 4), np.uint8))
    with pytest.raises(DetectFTError, match="RGB uint8"):
        expand_source(np.zeros((4, 4, 3), np.float32))
