"""The torch-free runtime for exported detectors: numpy, OpenCV and onnxruntime only.

An exported ``.onnx`` file carries a JSON document under the metadata key ``detect_ft`` (see
:func:`detect_ft.export.onnx_export.build_metadata`) that says how an image becomes the graph's input and
what the outputs mean. :class:`EdgeDetector` reads it and reproduces the training-time preprocessing:

    image file --cv2.imdecode--> BGR uint8 --BGR->RGB--> RGB uint8 (H, W, 3) --/255, float32--> HWC
    --transpose--> CHW float32 (3, H, W) in [0, 1]

Resizing and mean/std normalisation happen inside the graph (torchvision's own transform is exported
with the model), so boxes come back in the input image's pixels. A graph exported with ``--batch N``
(metadata ``input.batch``) takes N images of one size per run: :meth:`EdgeDetector.predict_batch` groups
the images by size, stacks up to N, and fills a short batch with copies of its last image.

``streams=N`` opens N sessions of the same file (parallel *streams*, as OpenVINO calls them): on a CPU
with few cores, N sessions each with ``threads // N`` intra-op threads, run concurrently on different
images, keep the cores busier than one session with all of them (small detectors parallelise poorly
inside one graph run). :meth:`EdgeDetector.predict_batch` spreads its images (or a batch graph's
same-size groups) over the streams from a small thread pool (onnxruntime releases the GIL while it runs;
preprocessing happens in the worker threads too); each stream costs one more copy of the model in memory.

Nothing here may import torch or a detect-ft module that does: this module is what runs on devices that
have only onnxruntime, numpy and OpenCV installed. Opening the session, checking the metadata and the
detections format are :mod:`detect_ft.inference.predictions`'s (torch-free too).
"""

from __future__ import annotations

import numbers
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from detect_ft.data.image import read_image  # noqa: F401  (the edge API's reader: training's own)
from detect_ft.inference.predictions import (
    METADATA_FORMAT,
    METADATA_KEY,
    as_detections,
    filter_detections,
    open_onnx_session,
    predict_in_groups,
    read_onnx_metadata,
    session_metadata,
    size_groups,
)
from detect_ft.utils.errors import DetectFTError

__all__ = [
    "METADATA_FORMAT",
    "METADATA_KEY",
    "EdgeDetector",
    "check_streams",
    "preprocess",
    "read_image",
    "read_metadata",
]

# The edge API's name for it; opening the session and checking the metadata live in detect_ft.inference.predictions.
read_metadata = read_onnx_metadata


def check_streams(streams: Any) -> int:
    """``streams`` (parallel model copies) as an int >= 1; a one-line DetectFTError otherwise."""
    if isinstance(streams, bool) or not isinstance(streams, numbers.Integral) or streams < 1:
        raise DetectFTError(
            f"streams={streams!r}: pass a whole number of parallel model copies, at least 1 (e.g. streams=2 "
            "on a 2-core CPU)"
        )
    return int(streams)


def stream_threads(threads: Optional[int], streams: int) -> Optional[int]:
    """Intra-op threads of each of ``streams`` sessions: ``threads`` (default: all cores) split evenly,
    at least 1; one stream keeps ``threads`` as given (None: the runtime's own choice)."""
    if streams == 1:
        return threads
    return max(1, int(threads or os.cpu_count() or 1) // streams)


def preprocess(image: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Turn an RGB uint8 image (H, W, 3) into the graph input the metadata's ``input`` section describes.

    Returns:
        float32 (3, H, W) (or (1, 3, H, W) when ``spec["batch_dim"]``), values ``pixel * spec["scale"]``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DetectFTError(
            f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}; "
            "decode files with detect_ft.inference.read_image"
        )
    scale = np.float32(spec["scale"])
    if spec.get("layout", "CHW") == "CHW":
        # Plane by plane: OpenCV splits the channels, each converts into its slot and one in-place multiply
        # scales them (6x faster than converting, scaling and transposing the HWC array, same values).
        planes = cv2.split(np.ascontiguousarray(image))  # OpenCV takes no negative or channel strides
        array = np.empty((3, *image.shape[:2]), np.float32)
        for index, plane in enumerate(planes[::-1] if spec.get("color") == "BGR" else planes):
            array[index] = plane
    else:
        array = np.ascontiguousarray(image[..., ::-1] if spec.get("color") == "BGR" else image, dtype=np.float32)
    array *= scale
    return array[None] if spec.get("batch_dim") else array


class EdgeDetector:
    """Run an exported detect-ft ``.onnx`` detector with onnxruntime.

    Args:
        path: the ``.onnx`` file (fp32 or INT8).
        providers: onnxruntime execution providers (default: CPU).
        threads: intra-op threads (default: onnxruntime's choice, all cores); with ``streams`` > 1, the
            total, split evenly over the streams, at least one each (default: ``os.cpu_count()``).
        conf: default score threshold of :meth:`predict` (0 keeps everything the graph returns).
        streams: parallel sessions of the file that :meth:`predict_batch` runs images on concurrently
            (throughput on folders and videos; each costs one more copy of the model in memory).
            :meth:`predict` uses the first.

    Attributes:
        metadata: the exported metadata (``class_names``, ``category_ids``, ``model_name``, ``input``...).
        class_names: K names; label k is ``class_names[k - 1]``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        providers: Optional[Sequence[str]] = None,
        threads: Optional[int] = None,
        conf: float = 0.0,
        streams: int = 1,
    ) -> None:
        streams = check_streams(streams)
        per_stream = stream_threads(threads, streams)
        self.sessions = [open_onnx_session(path, providers=providers, threads=per_stream) for _ in range(streams)]
        self.session = self.sessions[0]
        self._input_name = self.session.get_inputs()[0].name
        self._use_metadata(path, session_metadata(self.session, path), conf)
        self._use_streams(streams)

    def _use_streams(self, streams: int) -> None:
        """Keep the indices of the ``streams`` runners (sessions or infer requests) that are free."""
        self.streams = streams
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for stream in range(streams):
            self._free.put(stream)

    def _use_metadata(self, path: str | os.PathLike, metadata: dict[str, Any], conf: float) -> None:
        """Take the checked ``metadata``'s classes, input spec and output names (shared by the runtimes)."""
        self.path = os.fspath(path)
        self.metadata = metadata
        self.class_names: list[str] = list(self.metadata["class_names"])
        self.category_ids: list[int] = list(self.metadata["category_ids"])
        self.conf = float(conf)
        self._input = self.metadata["input"]
        self._outputs = list(self.metadata["outputs"])
        self.batch: int = int(self._input.get("batch", 1))  # images per graph run (fixed at export)
        if self.batch > 1:
            self._outputs.append(self.metadata["counts_output"])

    def predict(self, image: np.ndarray, conf: Optional[float] = None) -> dict[str, Any]:
        """Detect objects in one RGB uint8 image (H, W, 3).

        Returns:
            ``boxes`` float32 (N, 4) xyxy in the image's pixels, ``scores`` float32 (N,), ``labels``
            int64 (N,) in 1..K, ``names`` (N class names); detections scoring below ``conf`` (default:
            the detector's ``conf``) are left out, the rest sorted by descending score.
        """
        return self._finish(self._run([image])[0], conf)

    def _run(self, images: Sequence[np.ndarray], stream: int = 0) -> list[dict[str, np.ndarray]]:
        """One graph run on up to :attr:`batch` images of one size on ``stream``: each image's raw detections."""
        keys = ("boxes", "scores", "labels")
        if self.batch == 1:
            outputs = self._infer(preprocess(images[0], self._input), stream)
            return [as_detections(dict(zip(keys, outputs)))]
        # A short batch is filled with copies of its last image, whose detections are dropped.
        arrays = [preprocess(image, self._input) for image in images]
        feed = np.concatenate(arrays + arrays[-1:] * (self.batch - len(arrays)))
        *outputs, counts = self._infer(feed, stream)
        counts = np.asarray(counts, np.int64).reshape(-1)
        if len(counts) != self.batch or (counts < 0).any() or int(counts.sum()) != len(outputs[1]):
            raise DetectFTError(
                f"{self.path}: the graph's per-image counts {counts.tolist()} do not add up to its "
                f"{len(outputs[1])} detections; re-export the model"
            )
        ends = np.cumsum(counts)
        return [
            as_detections({key: out[end - n : end] for key, out in zip(keys, outputs)})
            for n, end in zip(counts[: len(images)], ends[: len(images)])
        ]

    def _infer(self, feed: np.ndarray, stream: int = 0) -> list[np.ndarray]:
        """One graph run on the preprocessed ``feed`` by session ``stream``: the metadata's outputs, in order."""
        return self.sessions[stream].run(self._outputs, {self._input_name: feed})

    def _run_on_free_stream(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """:meth:`_run` on a stream no other thread is using (waits for one when all are busy)."""
        stream = self._free.get()
        try:
            return self._run(images, stream)
        finally:
            self._free.put(stream)

    def _run_streams(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Each image's raw detections, the :func:`size_groups` run concurrently over the streams."""
        groups = size_groups(images, self.batch)
        results: list[Any] = [None] * len(images)
        if not groups:
            return results
        with ThreadPoolExecutor(max_workers=min(self.streams, len(groups))) as pool:
            found = pool.map(self._run_on_free_stream, [[images[i] for i in group] for group in groups])
            for group, detections in zip(groups, found, strict=True):
                for index, det in zip(group, detections, strict=True):
                    results[index] = det
        return results

    def _finish(self, det: dict[str, np.ndarray], conf: Optional[float]) -> dict[str, Any]:
        """``det`` checked, filtered at ``conf`` (default the detector's), sorted, with class names."""
        n_boxes, n_scores, n_labels = (len(det[key]) for key in ("boxes", "scores", "labels"))
        if n_boxes != n_scores or n_labels != n_scores:
            raise DetectFTError(
                f"{self.path}: the graph returned {n_boxes} boxes, {n_scores} scores and "
                f"{n_labels} labels; re-export the model"
            )
        det = filter_detections(det, self.conf if conf is None else conf)
        order = np.argsort(-det["scores"], kind="stable")
        det = {key: value[order] for key, value in det.items()}
        wrong = det["labels"][(det["labels"] < 1) | (det["labels"] > len(self.class_names))]
        if len(wrong):
            raise DetectFTError(
                f"{self.path}: the graph returned label {int(wrong[0])} outside 1..{len(self.class_names)} "
                "(its class_names); re-export the model"
            )
        return {**det, "names": [self.class_names[k - 1] for k in det["labels"]]}

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """:meth:`predict` for each image; the ``predict_batch`` signature the evaluator's loop takes.

        A batch graph (:attr:`batch` > 1) runs up to :attr:`batch` images of one size at once (images are
        grouped by size, order kept); a batch-1 graph runs them one by one. With :attr:`streams` > 1 the
        runs (single images or groups) go concurrently to the streams; results come back in order.
        """
        if self.streams > 1:
            raw = self._run_streams(list(images))
        else:
            raw = predict_in_groups(self._run, list(images), self.batch)
        return [self._finish(det, None) for det in raw]

    def __repr__(self) -> str:
        streams = f", streams={self.streams}" if self.streams > 1 else ""
        return (
            f"EdgeDetector({self.path!r}, model={self.metadata.get('model_name')!r}, "
            f"classes={self.class_names}{streams})"
        )
