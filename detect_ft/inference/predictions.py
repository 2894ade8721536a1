"""Detections as plain numpy arrays, shared by every runtime: the PyTorch evaluator, the ONNX edge runtime
and the export parity check.

*Detections* of one image are a dict with

* ``boxes``: float32 (N, 4), xyxy in absolute pixels of that image (x1 <= x2, y1 <= y2);
* ``scores``: float32 (N,);
* ``labels``: int64 (N,) in 1..K; label k is ``class_names[k - 1]`` and COCO category ``category_ids[k - 1]``.

A :data:`PredictBatch` maps a list of RGB uint8 images (H, W, 3) to one such dict per image, in order.
This module also opens exported ``.onnx`` models (onnxruntime session + the ``detect_ft`` metadata that
says how to feed them) and writes detections as COCO results rows.

Torch-free by contract: numpy only at import time, onnxruntime imported when a session is opened, so the
edge runtime can use it on devices without torch (tests/test_edge.py imports it with torch blocked).
"""

from __future__ import annotations

import json
import numbers
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from detect_ft.utils import limits
from detect_ft.utils.errors import DetectFTError

PredictBatch = Callable[[list[np.ndarray]], list[dict]]
"""``predict_batch(images) -> detections``: RGB uint8 images (H, W, 3) in, one detections dict per image out."""

METADATA_KEY = "detect_ft"  # the ONNX metadata_props key holding the export's JSON document
METADATA_FORMAT = 1  # version of that document; a runtime refuses other versions


def as_detections(output: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A runtime's output for one image as detections: ``boxes`` float32 (N, 4) xyxy pixels, ``scores``
    float32 (N,), ``labels`` int64 (N,). Only those three keys are kept; N may be 0."""
    return {
        "boxes": np.asarray(output["boxes"], np.float32).reshape(-1, 4),
        "scores": np.asarray(output["scores"], np.float32).reshape(-1),
        "labels": np.asarray(output["labels"], np.int64).reshape(-1),
    }


def filter_detections(detections: Mapping[str, Any], score_thresh: float) -> dict[str, np.ndarray]:
    """The detections of one image scoring at least ``score_thresh``, in their order (dtypes are kept;
    ``boxes`` come back as (N, 4), ``scores`` and ``labels`` as (N,))."""
    scores = np.asarray(detections["scores"]).reshape(-1)
    keep = scores >= score_thresh
    return {
        "boxes": np.asarray(detections["boxes"]).reshape(-1, 4)[keep],
        "scores": scores[keep],
        "labels": np.asarray(detections["labels"]).reshape(-1)[keep],
    }


def filter_predictions(predictions: Sequence[Mapping[str, Any]], score_thresh: float) -> list[dict]:
    """:func:`filter_detections` for every image (a new list; the inputs are left as they are)."""
    return [filter_detections(pred, score_thresh) for pred in predictions]


def coco_results(
    image_id: int,
    detections: Mapping[str, Any],
    category_ids: Sequence[int],
    *,
    file_name: Optional[str] = None,
) -> list[dict]:
    """COCO results rows of one image's detections, in their order.

    Each row is ``{"image_id", ["file_name",] "category_id", "bbox", "score"}``: ``bbox`` is
    [x, y, w, h] in absolute pixels (computed in float64 from the xyxy boxes), ``category_id`` the
    original id of the label (``category_ids[label - 1]``); ``file_name`` only when given.
    """
    boxes = np.asarray(detections["boxes"], np.float64).reshape(-1, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
    scores = np.asarray(detections["scores"], np.float64).reshape(-1).tolist()
    labels = np.asarray(detections["labels"]).reshape(-1).tolist()
    head = {"image_id": int(image_id)} if file_name is None else {"image_id": int(image_id), "file_name": file_name}
    return [
        {**head, "category_id": int(category_ids[int(label) - 1]), "bbox": bbox, "score": score}
        for bbox, score, label in zip(xywh, scores, labels)
    ]


def size_groups(images: Sequence[np.ndarray], batch: int) -> list[list[int]]:
    """Indices of ``images`` in groups of at most ``batch`` images of one (H, W) shape: a batched run
    resizes and pads every image alike only when they share a size, so only those are run together.

    Groups come in the order of their first image; within a group, images keep their order.
    """
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(np.shape(image)[:2]), []).append(index)
    return [group[i : i + batch] for group in by_shape.values() for i in range(0, len(group), batch)]


def predict_in_groups(predict_batch: PredictBatch, images: Sequence[np.ndarray], batch: int) -> list[dict]:
    """``predict_batch`` run on the :func:`size_groups` of ``images`` (at most ``batch`` same-size images
    per call); one detections dict per image, in the order of ``images``."""
    results: list[Any] = [None] * len(images)
    for group in size_groups(images, batch):
        for index, detections in zip(group, predict_batch([images[i] for i in group]), strict=True):
            results[index] = detections
    return results


def onnx_providers(device: str = "cpu") -> list[str]:
    """onnxruntime execution providers for ``device``: CUDA first when ``device`` is not ``cpu`` and this
    onnxruntime has it, CPU always."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


def open_onnx_session(
    path: str | os.PathLike,
    *,
    providers: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    graph_optimization: str = "ORT_ENABLE_ALL",
):
    """An ``onnxruntime.InferenceSession`` of the model file ``path``.

    Args:
        providers: execution providers (default: CPU only).
        threads: intra-op threads, with one inter-op thread (default: onnxruntime's choice).
        graph_optimization: an ``onnxruntime.GraphOptimizationLevel`` name (onnxruntime's default: all).

    Raises:
        DetectFTError: the file is missing or onnxruntime cannot load it.
    """
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise DetectFTError(f"model file {path} not found; pass the .onnx file written by `detect-ft export`")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, graph_optimization)
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            os.fspath(path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise DetectFTError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0]}); re-export it") from None


def session_metadata(session, path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``detect_ft`` metadata document of an open session (``path`` names the file in errors).

    Holds ``class_names`` (K names), ``category_ids`` (K ints), ``input`` (how an RGB uint8 image becomes
    the graph input: ``scale``, ``layout``, ``color``, ``batch_dim``...), ``outputs`` (the names of the
    boxes, scores and labels outputs) and whatever else the export wrote (``model_name``, ``opset``...).
    """
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise DetectFTError(
            f"{path} has no '{METADATA_KEY}' metadata; it was not written by `detect-ft export` "
            "(export the checkpoint with `detect-ft export`)"
        )
    return parse_metadata(props[METADATA_KEY], path)


def parse_metadata(text: str, path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``detect_ft`` metadata document from its JSON ``text`` (an ONNX file's metadata entry
    or an OpenVINO IR's ``rt_info``); ``path`` names the file in errors."""
    if len(text) > limits.MAX_ONNX_METADATA_BYTES:  # an export writes a few KiB; more is not a detect-ft model
        raise DetectFTError(
            f"{path}: metadata '{METADATA_KEY}' is {len(text)} characters, far more than an export writes; "
            "re-export the model"
        )
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DetectFTError(
            f"{path}: metadata '{METADATA_KEY}' is not valid JSON ({str(exc)[:120]}); re-export the model"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DetectFTError(
            f"{path}: metadata format {str(found)[:40]!r} is not supported by this runtime "
            f"(expects {METADATA_FORMAT}); re-export the model with this detect-ft version"
        )
    check_metadata(meta, path)
    return meta


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`session_metadata` of the model file ``path`` (read through onnxruntime; no ``onnx`` needed)."""
    return session_metadata(open_onnx_session(path), path)


def is_class_thresholds(thresholds: Any, num_classes: int) -> bool:
    """Whether ``thresholds`` is a list (or tuple) of ``num_classes`` confidences in [0, 1], one per class."""
    return (
        isinstance(thresholds, (list, tuple))
        and len(thresholds) == num_classes
        and all(isinstance(t, numbers.Real) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds)
    )


def pooled_threshold_classes(meta: Mapping[str, Any], class_names: Sequence[str]) -> list[str]:
    """The classes whose stored confidence threshold is the pooled (all-class) one, because validation
    found no true positive of theirs (evaluation shows n/a for them): read from a checkpoint's ``metrics``
    (``thresholds`` {name: value or None}) or an exported model's ``pooled_thresholds`` list."""
    metrics = meta.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("thresholds"), dict):
        return [name for name in class_names if metrics["thresholds"].get(name) is None]
    pooled = meta.get("pooled_thresholds")
    return [name for name in class_names if isinstance(pooled, list) and name in pooled]


def describe_thresholds(class_names: Sequence[str], thresholds: Sequence[float], pooled: Sequence[str] = ()) -> str:
    """``name 0.42, ...``: each class's threshold, marked where it is the pooled one (see
    :func:`pooled_threshold_classes`), so a printed 0.50 is never mistaken for a class's own."""
    note = " (pooled over all classes: n/a in eval, no true positive of its own)"
    return ", ".join(f"{name} {t:.2f}{note if name in pooled else ''}" for name, t in zip(class_names, thresholds))


def check_metadata(meta: dict[str, Any], path: str | os.PathLike) -> None:
    """DetectFTError naming the field when the metadata cannot drive preprocessing and the outputs."""

    def bad(field: str, wanted: str) -> DetectFTError:
        return DetectFTError(
            f"{path}: metadata field '{field}' must be {wanted}; the file was not written by this "
            "detect-ft's export or was changed since; re-export the model"
        )

    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("class_names", "a non-empty list of strings")
    ids = meta.get("category_ids")
    integers = isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    if not integers or len(ids) != len(names):
        raise bad("category_ids", f"a list of {len(names)} integers")
    spec = meta.get("input")
    if not isinstance(spec, dict):
        raise bad("input", "a mapping")
    scale = spec.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise bad("input.scale", "a number in (0, 1]")
    if spec.get("layout", "CHW") not in ("CHW", "HWC") or spec.get("color", "RGB") not in ("RGB", "BGR"):
        raise bad("input.layout/color", "CHW or HWC / RGB or BGR")
    outputs = meta.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != 3 or not all(isinstance(o, str) for o in outputs):
        raise bad("outputs", "a list of the 3 output names (boxes, scores, labels)")
    batch = spec.get("batch", 1)  # absent in exports older than batch graphs: one image per run
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise bad("input.batch", "a whole number >= 1 (images per run)")
    if batch > 1 and (spec.get("batch_dim") is not True or not isinstance(meta.get("counts_output"), str)):
        raise bad("input.batch_dim/counts_output", "true / the per-image counts output's name in a batch graph")
    thresholds = meta.get("thresholds")
    if thresholds is not None and not is_class_thresholds(thresholds, len(names)):
        raise bad("thresholds", f"a list of {len(names)} confidences in [0, 1] (one per class) or absent")
