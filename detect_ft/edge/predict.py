"""Run a detector over an image, a folder of images or a video; write annotated copies and COCO results.

Torch-free (numpy and OpenCV), so the ONNX path of ``detect-ft predict`` runs where only the edge
runtime's dependencies are installed; a PyTorch checkpoint plugs in through the same ``predict_batch``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from detect_ft.edge.runtime import read_image
from detect_ft.errors import DetectFTError
from detect_ft.predictions import PredictBatch, as_detections, coco_results, filter_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


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


def list_images(source: Path) -> list[Path]:
    """The image files directly inside folder ``source``, sorted by name."""
    return sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def predict_source(
    predict_batch: PredictBatch,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    class_names: Sequence[str],
    category_ids: Sequence[int],
    conf: float = 0.3,
) -> dict:
    """Detect objects in ``source`` and write the results under ``output``.

    ``source`` is an image file, a folder of images (non-recursive) or a video file. Images are written
    annotated under their own names (PNG for non-JPEG inputs, JPEG otherwise); a video becomes
    ``<stem>.pred.mp4`` (mp4v). ``predictions.json`` holds COCO results for every image or frame:
    ``image_id`` (1-based position; frame number + 1 for videos), ``file_name``, ``category_id``
    (original ids), ``bbox`` [x, y, w, h] pixels, ``score`` (>= ``conf``).

    The inputs are never written over: ``output`` may not be the source folder, and no output file may
    be one of the input files; that is checked before anything is written.

    Returns:
        ``{"images": n, "detections": n, "predictions": path, "annotated": [paths]}``.
    """
    from detect_ft.io import write_json_atomic

    source, output = Path(source), Path(output)
    if not source.exists():
        raise DetectFTError(f"source {source} does not exist; pass an image, a folder of images or a video")
    check_no_overwrite(source, output)
    output.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        count, annotated = _predict_video(predict_batch, source, output, class_names, category_ids, conf, results)
    else:
        count, annotated = 0, []
        for image_id, name, image in _images(source):
            det = _detections(predict_batch, image, conf)
            results += coco_results(image_id, det, category_ids, file_name=name)
            annotated.append(_write_annotated(output, name, draw_detections(image, det, class_names)))
            count += 1
    if count == 0:
        raise DetectFTError(
            f"source {source} holds no readable images or frames; pass {', '.join(IMAGE_SUFFIXES)} "
            f"files or a {', '.join(VIDEO_SUFFIXES)} video"
        )
    predictions = output / "predictions.json"
    write_json_atomic(predictions, results, indent=None)
    return {"images": count, "detections": len(results), "predictions": str(predictions), "annotated": annotated}


def annotated_name(name: str) -> str:
    """The file name of an input image's annotated copy: the same name, PNG for non-JPEG/PNG inputs."""
    return name if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") else f"{Path(name).stem}.png"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_no_overwrite(source: Path, output: Path) -> None:
    """DetectFTError, before anything is written, when predicting ``source`` into ``output`` would write
    over an input: the same folder, or an output file that is one of the inputs. Names what it would
    overwrite."""
    if source.is_dir():
        inputs = list_images(source)
        if output.exists() and _same_file(output, source):
            shown = ", ".join(p.name for p in inputs[:5]) + (f" ... ({len(inputs)} in all)" if len(inputs) > 5 else "")
            raise DetectFTError(
                f"output folder {output} is the source folder: the annotated copies would overwrite "
                f"the input images ({shown or 'none yet'}) and become inputs of the next run; "
                "choose another output folder"
            )
        outputs = [output / annotated_name(p.name) for p in inputs]
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        inputs, outputs = [source], [output / f"{source.stem}.pred.mp4"]
    else:
        inputs, outputs = [source], [output / annotated_name(source.name)]
    outputs.append(output / "predictions.json")
    hits = [(t, p) for t in outputs if t.exists() for p in inputs if _same_file(t, p)]
    if hits:
        shown = ", ".join(f"{t} (the input {p})" for t, p in hits[:5])
        raise DetectFTError(
            f"writing the predictions to {output} would overwrite input file(s) {shown}; choose another output folder"
        )


def _write_annotated(output: Path, name: str, image: np.ndarray) -> str:
    from detect_ft.io import atomic_path

    target = output / annotated_name(name)
    ok, data = cv2.imencode(target.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DetectFTError(f"OpenCV could not encode {target}; use .jpg or .png images")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data.tobytes())
    return str(target)


def _detections(predict_batch: PredictBatch, image: np.ndarray, conf: float) -> dict:
    return filter_detections(as_detections(predict_batch([image])[0]), conf)


def _images(source: Path) -> Iterator[tuple[int, str, np.ndarray]]:
    """``(image_id, file name, RGB uint8 image)`` for an image file or each image of a folder."""
    if source.is_dir():
        for i, path in enumerate(list_images(source)):
            yield i + 1, path.name, read_image(path)
        return
    if source.suffix.lower() not in IMAGE_SUFFIXES:
        raise DetectFTError(
            f"source {source}: unknown file type {source.suffix!r}; pass an image "
            f"({', '.join(IMAGE_SUFFIXES)}), a folder or a video ({', '.join(VIDEO_SUFFIXES)})"
        )
    yield 1, source.name, read_image(source)


def _predict_video(
    predict_batch: PredictBatch,
    source: Path,
    output: Path,
    class_names: Sequence[str],
    category_ids: Sequence[int],
    conf: float,
    results: list[dict],
) -> tuple[int, list[str]]:
    """Annotate every frame into ``<stem>.pred.mp4`` (mp4v, the source's frame rate); append results."""
    from detect_ft.io import atomic_path

    capture = cv2.VideoCapture(os.fspath(source))
    if not capture.isOpened():
        raise DetectFTError(f"video {source} cannot be opened by OpenCV; re-encode it as an H.264 or MJPEG .mp4/.avi")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    target = output / f"{source.stem}.pred.mp4"
    count, writer = 0, None
    try:
        with atomic_path(target) as tmp:
            # OpenCV picks the container from the file suffix, so the temporary name must end in .mp4.
            tmp_mp4 = tmp.with_name(tmp.name + ".mp4")
            try:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    det = _detections(predict_batch, image, conf)
                    results += coco_results(count + 1, det, category_ids, file_name=source.name)
                    if writer is None:
                        size = (image.shape[1], image.shape[0])
                        writer = cv2.VideoWriter(os.fspath(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
                        if not writer.isOpened():
                            raise DetectFTError(
                                f"OpenCV cannot write {target} with the mp4v codec; use an OpenCV build with FFmpeg"
                            )
                    writer.write(cv2.cvtColor(draw_detections(image, det, class_names), cv2.COLOR_RGB2BGR))
                    count += 1
                if writer is not None:
                    writer.release()
                    writer = None
                    os.replace(tmp_mp4, tmp)
                elif count == 0:
                    raise DetectFTError(f"video {source} has no readable frames; re-encode it")
            finally:
                if writer is not None:
                    writer.release()
                tmp_mp4.unlink(missing_ok=True)
    finally:
        capture.release()
    return count, [str(target)]
