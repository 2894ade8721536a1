"""Hostile inputs to ``predict`` (issue 20): images over the pixel limit, truncated JPEGs, output folders
that hold the user's own files or cannot be written. Every case ends in one ``error:`` line naming the
file and the fix, in bounded memory, and loses no file. The model is a constant ONNX detector
(:func:`conftest.constant_onnx`), so nothing is exported or trained here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import BLOCK_TORCH, constant_onnx, noise_image, run_python, snapshot, write_black_png, write_png_header

from detect_ft import Detector
from detect_ft.inference import read_image
from detect_ft.utils import limits
from detect_ft.utils.errors import DetectFTError

BLOCK_PIL = "sys.modules['PIL'] = None\n"  # a minimal edge install: numpy, OpenCV, onnxruntime


def _one_line(err: str) -> str:
    """The one ``error:`` line of stderr (the progress bar's carriage-return frames left out)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("predict:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _truncated_jpeg(path: Path) -> Path:
    noise_image(path, 256, 192)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # OpenCV alone decodes this, filling the rest with grey
    assert cv2.imread(str(path)) is not None
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return constant_onnx(tmp_path_factory.mktemp("model") / "constant.onnx")


# ---------------------------------------------------------------- the pixel limit, before decoding


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    """A valid 20000 x 20000 black PNG: 5 MB on disk, 1.2 GB decoded (predict once peaked at 16 GB on it)."""
    return write_black_png(tmp_path_factory.mktemp("huge") / "huge.png", 20_000, 20_000)


@pytest.mark.parametrize("blocked", ["", BLOCK_PIL], ids=["with-pillow", "without-pillow"])
def test_an_image_over_the_pixel_limit_is_refused_from_its_header_in_bounded_memory(huge_png, blocked):
    huge = huge_png
    code = (
        BLOCK_TORCH
        + blocked
        + (
            "from detect_ft.inference import read_image\n"
            "from detect_ft.utils.errors import DetectFTError\n"
            "try:\n"
            "    read_image(sys.argv[1])\n"
            "except DetectFTError as exc:\n"
            "    print(exc)\n"
            # peak MiB of this process (VmHWM; ru_maxrss would carry over the forking pytest's own peak)
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)\n"
        )
    )
    proc = run_python(code, str(huge))
    assert proc.returncode == 0, proc.stderr
    message, peak_mib = proc.stdout.strip().splitlines()
    assert "huge.png" in message and "400.0 megapixels" in message and "decoder's limit" in message
    assert int(peak_mib) < 400  # the interpreter, numpy, OpenCV and onnxruntime; no 1.2 GB image


def test_predict_refuses_an_image_over_the_pixel_limit_in_one_line(model, huge_png, tmp_path, run_cli):
    for huge in (huge_png, write_png_header(tmp_path / "header_only.png", 20_000, 20_000)):
        code, _, err = run_cli("predict", model, huge, "--output", tmp_path / "out")
        assert code == 2 and huge.name in _one_line(err) and "400.0 megapixels" in err
        assert not (tmp_path / "out" / huge.name).exists()


def test_every_decoding_path_holds_the_pixel_limit(model, tmp_path, monkeypatch):
    """Detector.predict (ONNX and any predict_batch, as a PyTorch model's), the edge reader, in-memory
    images, slicing and video frames (their size read from the container before any frame is decoded)."""
    photo = noise_image(tmp_path / "photo.png", 64, 48)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for _ in range(3):
        writer.write(cv2.imread(str(photo)))
    writer.release()
    calls = []
    nothing = lambda images: calls.append(len(images)) or [{"boxes": [], "scores": [], "labels": []} for _ in images]  # noqa: E731
    detectors = [Detector.load(model), Detector(predict_batch=nothing, model_name="fake", class_names=["x"])]
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 64 * 48 - 1)  # a program may lower (or raise) the limit
    for detector in detectors:
        for source, named in (
            (photo, "photo.png"),
            (video, "clip.mp4: each frame"),  # from the container, before a frame is decoded
            (np.zeros((48, 64, 3), np.uint8), "in-memory"),
        ):
            with pytest.raises(DetectFTError, match=f"{named}.*64x48 = 0.0 megapixels, beyond the decoder's limit"):
                detector.predict(source)
        with pytest.raises(DetectFTError, match="beyond the decoder's limit"):
            detector.predict(photo, slice=64)
    with pytest.raises(DetectFTError, match="photo.png"):
        read_image(photo)
    assert calls == []


# ---------------------------------------------------------------- truncated JPEGs


def test_predict_names_a_truncated_jpeg_instead_of_reporting_detections(model, tmp_path, run_cli):
    cut = _truncated_jpeg(tmp_path / "photos" / "cut.jpg")
    code, out, err = run_cli("predict", model, cut, "--output", tmp_path / "out")
    line = _one_line(err)
    assert code == 2 and "cut.jpg" in line and "truncated" in line and "detections in" not in out
    with pytest.raises(DetectFTError, match="cut.jpg is truncated"):
        Detector.load(model).predict(cut)


def test_a_truncated_jpeg_is_named_without_pillow_too(tmp_path):
    from PIL import Image

    cut = _truncated_jpeg(tmp_path / "cut.jpg")
    fine = tmp_path / "rotated.jpg"  # EXIF orientation 6: shown rotated, as training decodes it
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(fine, exif=exif)
    code = BLOCK_TORCH + BLOCK_PIL
    code += "from detect_ft.inference import read_image\nfrom detect_ft.utils.errors import DetectFTError\n"
    code += "image = read_image(sys.argv[2])\nprint(image.shape, int(image.astype('int64').sum()))\n"
    code += "try:\n    read_image(sys.argv[1])\nexcept DetectFTError as exc:\n    print(exc)\n"
    proc = run_python(code, str(cut), str(fine))
    assert proc.returncode == 0, proc.stderr
    decoded, message = proc.stdout.strip().splitlines()
    with_pillow = read_image(fine)
    assert decoded == f"(64, 48, 3) {int(with_pillow.astype(np.int64).sum())}" and "cut.jpg is truncated" in message


@pytest.mark.parametrize(
    "suffix, params",
    [
        (".png", []),
        (".jpg", []),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: the VP8L header
        (".tif", []),
    ],
)
def test_the_header_reader_gives_the_decoded_size(tmp_path, suffix, params):
    from detect_ft.data.image_header import header_size

    path = tmp_path / f"image{suffix}"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8), params)
    assert header_size(path.read_bytes()) == (53, 37)
    assert header_size(path.read_bytes()[:10]) is None and header_size(b"P6\n53 37\n255\n") is None


# ---------------------------------------------------------------- predict replaces only what it wrote


def test_predict_never_replaces_a_file_of_the_users_in_the_output_folder(model, tmp_path, run_cli):
    photos = tmp_path / "photos"
    a, b = noise_image(photos / "a.jpg", seed=1), noise_image(photos / "b.jpg", seed=2)
    out = tmp_path / "out"
    mine = noise_image(out / "a.jpg", seed=3)  # the user's own a.jpg, not an annotated copy
    before = snapshot(out)
    code, stdout, err = run_cli("predict", model, a, b, "--output", out)
    line = _one_line(err)
    assert code == 2 and str(mine) in line and "did not write" in line and "choose another output folder" in line
    assert snapshot(out) == before and "detections in" not in stdout  # refused before writing anything
    # Into a new folder it runs, and a second run there replaces its own files (recorded) and nothing else.
    fresh = tmp_path / "fresh"
    assert run_cli("predict", model, a, b, "--output", fresh)[0] == 0
    assert sorted(snapshot(fresh)) == ["a.jpg", "b.jpg", "predict-files.json", "predictions.json"]
    noise_image(fresh / "notes.png", seed=4)
    assert run_cli("predict", model, a, b, "--output", fresh)[0] == 0
    assert "notes.png" in snapshot(fresh)


def test_an_in_memory_image_never_replaces_a_users_file(tmp_path):
    from detect_ft.inference.writer import write_predictions

    detector = Detector(
        predict_batch=lambda images: [{"boxes": [], "scores": [], "labels": []}], model_name="f", class_names=["x"]
    )
    image = np.zeros((8, 8, 3), np.uint8)
    mine = noise_image(tmp_path / "image_1.png", seed=5)
    before = mine.read_bytes()
    with pytest.raises(DetectFTError, match="image_1.png, which it did not write"):
        write_predictions(detector.stream(image), image, tmp_path)
    assert mine.read_bytes() == before
    write_predictions(detector.stream(image), image, tmp_path / "new")
    write_predictions(detector.stream(image), image, tmp_path / "new")  # its own image_1.png: replaced
    assert (tmp_path / "new" / "image_1.png").is_file()


def _hand_labelled(root: Path, fmt: str) -> Path:
    """A one-image hand-labelled dataset in ``root`` laid out as predict --save-format would write it."""
    if fmt == "coco":
        (root / "images").mkdir(parents=True)
        (root / "predictions.json").write_text('{"images": [], "annotations": [], "categories": []}')
    elif fmt == "voc":
        (root / "Annotations").mkdir(parents=True)
        (root / "Annotations" / "a.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    else:
        (root / "predictions" / "labels").mkdir(parents=True)
        (root / "predictions" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        (root / "data.yaml").write_text("names: [cat, dog]\ntrain: train/images\n")
    return root


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_predictions_as_a_dataset_never_replace_hand_labelled_annotations(model, tmp_path, run_cli, fmt):
    from detect_ft.inference.results import write_results_dataset

    a = noise_image(tmp_path / "photos" / "a.jpg", seed=1)
    out = tmp_path / "out"
    dataset = _hand_labelled(out / "dataset", fmt)
    before = snapshot(out)
    code, _, err = run_cli("predict", model, a, "--output", out, "--save-format", fmt)
    assert code == 2 and "did not write" in _one_line(err) and str(dataset) in err
    assert snapshot(out) == before
    results = Detector.load(model).predict(a)
    with pytest.raises(DetectFTError, match=f"would replace {dataset}.* never replaces existing annotations"):
        write_results_dataset(results, dataset, fmt)
    assert snapshot(out) == before
    # a second run into a folder of its own replaces its own dataset
    assert run_cli("predict", model, a, "--output", tmp_path / "own", "--save-format", fmt)[0] == 0
    assert run_cli("predict", model, a, "--output", tmp_path / "own", "--save-format", fmt)[0] == 0


@pytest.mark.parametrize("obstacle", ["parent-is-a-file", "output-is-a-file", "read-only", "name-too-long"])
def test_an_output_folder_that_cannot_be_made_is_one_line(model, tmp_path, run_cli, obstacle):
    import os

    photo = noise_image(tmp_path / "a.jpg")
    (tmp_path / "file.txt").write_text("x")
    output = {
        "parent-is-a-file": tmp_path / "file.txt" / "out",
        "output-is-a-file": tmp_path / "file.txt",
        "read-only": tmp_path / "ro" / "out",
        "name-too-long": tmp_path / ("x" * 300) / "out",  # another OSError of mkdir, as read-only storage gives
    }[obstacle]
    if obstacle == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir(mode=0o555)
    code, _, err = run_cli("predict", model, photo, "--output", output)
    line = _one_line(err)
    assert code == 2 and str(output) in line
    expected = {"read-only": "(Permission denied); choose a writable", "name-too-long": "(File name too long)"}
    assert expected.get(obstacle, "file.txt is a file, not a folder") in line
    assert (tmp_path / "file.txt").read_text() == "x"
