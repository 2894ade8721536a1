"""The torch-free runtime for exported detectors: numpy, OpenCV and onnxruntime only.

An exported ``.onnx`` file carries a JSON document under the metadata key ``detect_ft`` (see
:func:`detect_ft.export.onnx_export.build_metadata`) that says how an image becomes the graph's input and
what the outputs mean. :class:`EdgeDetector` reads it and reproduces the training-time preprocessing:

    image file --cv2.imread--> BGR uint8 --BGR->RGB--> RGB uint8 (H, W, 3) --/255, float32--> HWC
    --transpose--> CHW float32 (3, H, W) in [0, 1]

Resizing and mean/std normalisation happen inside the graph (torchvision's own transform is exported
with the model), so boxes come back in the input image's pixels.

Nothing here may import torch or a detect-ft module that does: this module is what runs on devices that
have only onnxruntime, numpy and OpenCV installed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from detect_ft.errors import DetectFTError
from detect_ft.limits import MAX_ONNX_METADATA_BYTES

METADATA_KEY = "detect_ft"
METADATA_FORMAT = 1


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The detect-ft metadata of an exported model, read through onnxruntime (no ``onnx`` needed)."""
    import onnxruntime as ort

    session = _open_session(path, ort.SessionOptions(), ["CPUExecutionProvider"])
    return _metadata_of(session, path)


def _open_session(path: str | os.PathLike, options, providers: Sequence[str]):
    import onnxruntime as ort

    if not os.path.isfile(path):
        raise DetectFTError(f"model file {path} not found; pass the .onnx file written by `detect-ft export`")
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise DetectFTError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0]}); re-export it") from None


def _metadata_of(session, path: str | os.PathLike) -> dict[str, Any]:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise DetectFTError(
            f"{path} has no '{METADATA_KEY}' metadata; it was not written by `detect-ft export` "
            "(export the checkpoint with `detect-ft export`)"
        )
    text = props[METADATA_KEY]
    if len(text) > MAX_ONNX_METADATA_BYTES:  # an export writes a few KiB; more is not a detect-ft model
        raise DetectFTError(f"{path}: metadata '{METADATA_KEY}' is {len(text)} characters, far more than an export "
                            "writes; re-export the model")  # fmt: skip
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DetectFTError(f"{path}: metadata '{METADATA_KEY}' is not valid JSON ({str(exc)[:120]}); re-export the "
                            "model") from None  # fmt: skip
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DetectFTError(
            f"{path}: metadata format {str(found)[:40]!r} is not supported by this runtime "
            f"(expects {METADATA_FORMAT}); re-export the model with this detect-ft version"
        )
    _check_metadata(meta, path)
    return meta


def _check_metadata(meta: dict[str, Any], path: str | os.PathLike) -> None:
    """DetectFTError naming the field when the metadata cannot drive :func:`preprocess` and the outputs."""

    def bad(field: str, wanted: str) -> DetectFTError:
        return DetectFTError(f"{path}: metadata field '{field}' must be {wanted}; the file was not written by this "
                             "detect-ft's export or was changed since; re-export the model")  # fmt: skip

    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("class_names", "a non-empty list of strings")
    ids = meta.get("category_ids")
    if (not isinstance(ids, list) or len(ids) != len(names)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):  # fmt: skip
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


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3), as training did (OpenCV decode, BGR->RGB, EXIF
    orientation applied)."""
    if not os.path.isfile(path):
        raise DetectFTError(f"image file {path} does not exist; pass a JPEG or PNG file")
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DetectFTError(_undecodable(path))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _undecodable(path: str | os.PathLike) -> str:
    """Why OpenCV could not decode ``path``: its header's reason where Pillow is installed (a pixel count
    beyond the decoder's limit, not an image), else the generic message."""
    try:
        from detect_ft.data.image import read_image_info  # Pillow; absent on minimal edge installs

        read_image_info(path)
    except ImportError:
        pass
    except DetectFTError as exc:
        return str(exc)
    return f"image file {path} cannot be decoded (corrupt, truncated or not an image); pass a JPEG or PNG file"


def preprocess(image: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Turn an RGB uint8 image (H, W, 3) into the graph input the metadata's ``input`` section describes.

    Returns:
        float32 (3, H, W) (or (1, 3, H, W) when ``spec["batch_dim"]``), values ``pixel * spec["scale"]``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DetectFTError(
            f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}; "
            "decode files with detect_ft.edge.read_image"
        )
    if spec.get("color") == "BGR":
        image = image[..., ::-1]
    array = image.astype(np.float32) * np.float32(spec["scale"])
    if spec.get("layout", "CHW") == "CHW":
        array = array.transpose(2, 0, 1)
    array = np.ascontiguousarray(array)
    return array[None] if spec.get("batch_dim") else array


class EdgeDetector:
    """Run an exported detect-ft ``.onnx`` detector with onnxruntime.

    Args:
        path: the ``.onnx`` file (fp32 or INT8).
        providers: onnxruntime execution providers (default: CPU).
        threads: intra-op threads (default: onnxruntime's choice, all cores).
        conf: default score threshold of :meth:`predict` (0 keeps everything the graph returns).

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
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.path = os.fspath(path)
        self.session = _open_session(path, options, providers or ["CPUExecutionProvider"])
        self.metadata = _metadata_of(self.session, path)
        self.class_names: list[str] = list(self.metadata["class_names"])
        self.category_ids: list[int] = list(self.metadata["category_ids"])
        self.conf = float(conf)
        self._input = self.metadata["input"]
        self._input_name = self.session.get_inputs()[0].name
        self._outputs = list(self.metadata["outputs"])

    def predict(self, image: np.ndarray, conf: Optional[float] = None) -> dict[str, Any]:
        """Detect objects in one RGB uint8 image (H, W, 3).

        Returns:
            ``boxes`` float32 (N, 4) xyxy in the image's pixels, ``scores`` float32 (N,), ``labels``
            int64 (N,) in 1..K, ``names`` (N class names); detections scoring below ``conf`` (default:
            the detector's ``conf``) are left out, the rest sorted by descending score.
        """
        feed = {self._input_name: preprocess(image, self._input)}
        boxes, scores, labels = self.session.run(self._outputs, feed)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        labels = np.asarray(labels, np.int64).reshape(-1)
        if len(boxes) != len(scores) or len(labels) != len(scores):
            raise DetectFTError(f"{self.path}: the graph returned {len(boxes)} boxes, {len(scores)} scores and "
                                f"{len(labels)} labels; re-export the model")  # fmt: skip
        keep = scores >= (self.conf if conf is None else conf)
        order = np.argsort(-scores[keep], kind="stable")
        boxes, scores, labels = boxes[keep][order], scores[keep][order], labels[keep][order]
        wrong = labels[(labels < 1) | (labels > len(self.class_names))]
        if len(wrong):
            raise DetectFTError(f"{self.path}: the graph returned label {int(wrong[0])} outside 1..{len(self.class_names)} "
                                "(its class_names); re-export the model")  # fmt: skip
        return {"boxes": boxes, "scores": scores, "labels": labels, "names": [self.class_names[k - 1] for k in labels]}

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """:meth:`predict` for each image; the ``predict_batch`` signature the evaluator's loop takes.

        The graph takes one image at a time (images of one batch may differ in size), so this loops.
        """
        return [self.predict(image) for image in images]

    def __repr__(self) -> str:
        return f"EdgeDetector({self.path!r}, model={self.metadata.get('model_name')!r}, classes={self.class_names})"
