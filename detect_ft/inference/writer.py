"""Write what a detector found: annotated copies of images and videos, COCO results, and (optionally) the
predictions as a COCO, VOC or YOLO dataset of pseudo-labels.

Torch-free (numpy and OpenCV), so ``detect-ft predict model.onnx`` runs where only the edge runtime's
dependencies are installed. The detections come from :meth:`detect_ft.api.Detector.stream` (ONNX or
PyTorch alike) as :class:`~detect_ft.inference.results.Result` objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Union

import cv2
import numpy as np

from detect_ft.inference.drawing import write_rgb_image
from detect_ft.inference.outputs import annotated_name, check_output_folder, check_owned, claim_outputs, write_manifest
from detect_ft.inference.results import Result, write_results_dataset
from detect_ft.inference.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Source, expand_source, is_video
from detect_ft.utils.errors import DetectFTError


def write_predictions(
    results: Iterable[Result],
    source: Source,
    output: str | os.PathLike,
    *,
    save_format: Optional[str] = None,
    total: Optional[int] = None,
    progress: bool = False,
) -> dict:
    """Write ``results`` (those of ``source``, in order) under ``output``.

    Images are written annotated under their own names (PNG for non-JPEG/PNG inputs, ``image_<n>.png``
    for in-memory ones); a video becomes ``<stem>.pred.mp4`` (mp4v, the source's frame rate).
    ``predictions.json`` holds COCO results for every image or frame: ``image_id`` (1-based position,
    counting video frames), ``file_name``, ``category_id`` (original ids), ``bbox`` [x, y, w, h] pixels,
    ``score``. With ``save_format`` (coco, voc or yolo) the predictions are also written as a dataset in
    ``output/dataset`` (images copied), which detect-ft's adapters read back.

    Nothing that predict did not write is ever replaced: the inputs, and any other file in ``output``
    (a photo of an input's name, a hand-labelled ``output/dataset``), are checked before anything is
    written (:mod:`detect_ft.inference.outputs`; one line naming the file). Files an earlier run wrote there,
    recorded in ``output/predict-files.json``, are replaced.

    Returns:
        ``{"images": n, "detections": n, "predictions": path, "annotated": [paths], "dataset": path or None}``.
    """
    from tqdm import tqdm

    from detect_ft.utils.atomic_io import write_json_atomic

    output = Path(output)
    check_output_folder(output)
    items = check_no_overwrite(source, output, dataset=save_format is not None)
    owned = claim_outputs(output, items, save_format)
    bar = tqdm(results, total=total, unit="img", desc="predict", disable=not progress, leave=False)
    recorded = len(owned)
    rows, annotated, kept, image_id = _write_annotated_results(bar, output, owned, keep=save_format is not None)
    if len(owned) > recorded:  # in-memory images, named image_<n>.png as they came
        write_manifest(output, owned)
    if not rows and not annotated:
        raise DetectFTError(
            f"source {source} holds no readable images or frames; pass {', '.join(IMAGE_SUFFIXES)} "
            f"files or a {', '.join(VIDEO_SUFFIXES)} video"
        )
    predictions = output / "predictions.json"
    write_json_atomic(predictions, rows, indent=None)
    dataset = None
    if save_format:
        dataset = write_results_dataset(kept, output / "dataset", save_format, replace=[output / f for f in owned])
    return {
        "images": image_id,
        "detections": len(rows),
        "predictions": str(predictions),
        "annotated": annotated,
        "dataset": None if dataset is None else str(dataset),
    }


def _write_annotated_results(
    results: Iterable[Result], output: Path, owned: set[str], *, keep: bool
) -> tuple[list[dict], list[str], list[Result], int]:
    """Each result drawn into ``output`` (images one by one, video frames into one video per source):
    the COCO rows, the annotated paths, the image results kept for a dataset (``keep``, pixels dropped)
    and the number of images and frames. An in-memory image's ``image_<n>.png`` is checked against
    ``owned`` (:func:`~detect_ft.inference.outputs.check_owned`) and added to it."""
    rows, annotated, kept, sink, image_id = [], [], [], None, 0
    try:
        for image_id, result in enumerate(results, start=1):
            rows += result.to_coco(image_id)
            drawn = result.plot()
            if result.frame is not None:
                if sink is None or sink.source != result.path:
                    sink = _next_sink(sink, Path(result.path), output, annotated)
                sink.write(drawn)
            else:
                name = Path(result.path).name if result.path else f"image_{image_id}.png"
                if result.path is None:
                    check_owned(output, [(output / name, None)], owned)
                    owned.add(name)
                annotated.append(_write_annotated(output, name, drawn))
                if keep:
                    result.image = None
                    kept.append(result)
        _next_sink(sink, None, output, annotated)
        sink = None
    finally:
        if sink is not None:
            sink.abort()
    return rows, annotated, kept, image_id


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_no_overwrite(source: Source, output: Path, *, dataset: bool = False) -> list[Union[Path, np.ndarray]]:
    """DetectFTError, before anything is written, when predicting ``source`` into ``output`` would write
    over an input: a source folder, or an output file that is one of the inputs. Names what it would
    overwrite. With ``dataset``, also refuses sources that cannot become a dataset (videos, arrays).
    Returns the expanded source (:func:`~detect_ft.inference.sources.expand_source`)."""
    items = expand_source(source)
    inputs = [p for p in items if isinstance(p, Path)]
    folders = [
        Path(os.fspath(s))
        for s in (source if isinstance(source, (list, tuple)) else [source])
        if isinstance(s, (str, os.PathLike)) and Path(os.fspath(s)).is_dir()
    ]
    for folder in folders:
        if output.exists() and _same_file(output, folder):
            shown = ", ".join(p.name for p in inputs[:5]) + (f" ... ({len(inputs)} in all)" if len(inputs) > 5 else "")
            raise DetectFTError(
                f"output folder {output} is the source folder: the annotated copies would overwrite "
                f"the input images ({shown or 'none yet'}) and become inputs of the next run; "
                "choose another output folder"
            )
    if dataset and len(inputs) != len(items) or dataset and any(is_video(p) for p in inputs):
        raise DetectFTError(
            "only image files can be saved as a dataset (not videos or in-memory images); "
            "predict a folder of images, or leave out the dataset format"
        )
    outputs = [output / (f"{p.stem}.pred.mp4" if is_video(p) else annotated_name(p.name)) for p in inputs]
    outputs.append(output / "predictions.json")
    hits = [(t, p) for t in outputs if t.exists() for p in inputs if _same_file(t, p)]
    if hits:
        shown = ", ".join(f"{t} (the input {p})" for t, p in hits[:5])
        raise DetectFTError(
            f"writing the predictions to {output} would overwrite input file(s) {shown}; choose another output folder"
        )
    return items


def _write_annotated(output: Path, name: str, image: np.ndarray) -> str:
    return str(write_rgb_image(output / annotated_name(name), image))


def _next_sink(sink: Optional["VideoSink"], source: Optional[Path], output: Path, annotated: list[str]):
    """Finish ``sink`` (recording its file) and open the sink of the next video ``source`` (None: none)."""
    if sink is not None:
        annotated.append(sink.close())
    return VideoSink(source, output / f"{source.stem}.pred.mp4") if source is not None else None


class VideoSink:
    """Annotated frames of one video into ``target`` (mp4v, the source's frame rate), renamed into place
    only when complete; :meth:`abort` leaves no file."""

    def __init__(self, source: Path, target: Path) -> None:
        capture = cv2.VideoCapture(os.fspath(source))
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 25.0)
        capture.release()
        self.source, self.target = str(source), target
        # OpenCV picks the container from the file suffix, so the temporary name must end in .mp4.
        self.tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.mp4")
        self.writer = None

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(os.fspath(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
            if not self.writer.isOpened():
                self.abort()
                raise DetectFTError(
                    f"OpenCV cannot write {self.target} with the mp4v codec; use an OpenCV build with FFmpeg"
                )
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> str:
        self.writer.release()  # OpenCV created the file with open(), so it has the user's umask already
        self.writer = None
        os.replace(self.tmp, self.target)
        return str(self.target)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)
