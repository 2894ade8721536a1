"""The torch-free OpenVINO runtime: an exported ``model.xml`` (OpenVINO IR, fp32) run with OpenVINO alone.

``detect-ft export --format openvino`` converts the verified ONNX file with OpenVINO's own converter and
stores the same ``detect_ft`` metadata document in the IR's ``rt_info`` (key ``detect_ft``), so
:class:`OpenVINODetector` preprocesses, filters and names detections exactly as
:class:`~detect_ft.inference.runtime.EdgeDetector` does (it is one, with OpenVINO running the graph).
OpenVINO is the optional extra ``detect-ft[openvino]``; without it, :func:`import_openvino` raises one line
saying how to install it. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Any, Iterator, Optional

import numpy as np

from detect_ft.inference.predictions import METADATA_KEY, parse_metadata
from detect_ft.inference.runtime import EdgeDetector, check_streams
from detect_ft.utils.errors import DetectFTError

INSTALL_HINT = "pip install 'detect-ft[openvino]'"


def import_openvino() -> Any:
    """The ``openvino`` module; DetectFTError naming the extra to install when it is not importable."""
    try:
        import openvino
    except ImportError:
        raise DetectFTError(f"OpenVINO models need the openvino package; install it with {INSTALL_HINT}") from None
    return openvino


def is_openvino_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an OpenVINO IR (``.xml``; its weights are the ``.bin`` beside it)."""
    return os.fspath(path).lower().endswith(".xml")


def read_ir_metadata(model: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The checked ``detect_ft`` metadata of a read ``openvino.Model`` (``path`` names it in errors)."""
    if not model.has_rt_info([METADATA_KEY]):
        raise DetectFTError(
            f"{path} has no '{METADATA_KEY}' rt_info; it was not written by detect-ft's OpenVINO export "
            "(export the checkpoint to a .xml with `detect-ft export`)"
        )
    return parse_metadata(str(model.get_rt_info([METADATA_KEY]).astype(str)), path)


class _SignalStack(ctypes.Structure):
    """Linux's ``stack_t``, a thread's alternate signal stack (``sigaltstack(2)``)."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


SS_DISABLE = 2  # stack_t.ss_flags: no alternate signal stack


def _sigaltstack() -> Any:
    """libc's ``sigaltstack`` on Linux, None elsewhere or when it cannot be found."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Give the calling thread back its alternate signal stack when the block ends (Linux; elsewhere a no-op).

    For blocks that compile OpenVINO models. OpenVINO's CPU plugin (2026.4) gives the thread that compiles a
    model a signal stack of its own and, when the model is freed, puts back the one it found there, even
    when that was the stack of a model freed since: two models freed in the order they were compiled leave
    the thread on freed memory, and the next signal it handles (Ctrl-C; a child process exiting while
    torch's DataLoader watches SIGCHLD) kills the process with a segmentation fault. With the stack given
    back after every compile, every model finds, and puts back, the same one.
    """
    sigaltstack = _sigaltstack()
    saved = _SignalStack()
    if sigaltstack is None or sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        current = _SignalStack()
        sigaltstack(None, ctypes.byref(current))
        if (current.ss_sp, current.ss_size) != (saved.ss_sp, saved.ss_size):
            saved.ss_flags &= SS_DISABLE  # when set, flags may only say whether the stack is disabled
            sigaltstack(ctypes.byref(saved), None)


class OpenVINODetector(EdgeDetector):
    """Run an exported detect-ft OpenVINO IR (``model.xml`` + ``model.bin``) on OpenVINO's CPU plugin.

    Same contract as :class:`EdgeDetector`: ``predict(image, conf)`` on an RGB uint8 image (H, W, 3) and
    ``predict_batch(images)`` return ``boxes`` float32 (N, 4) xyxy in the image's pixels, ``scores``,
    ``labels`` (1..K) and ``names``.

    Args:
        path: the ``.xml`` file (its ``.bin`` beside it).
        threads: inference threads (default: OpenVINO's choice); with ``streams`` > 1, the total that
            OpenVINO shares among its streams.
        conf: default score threshold of :meth:`predict`.
        streams: OpenVINO CPU streams (``NUM_STREAMS``), each with its own infer request, that
            :meth:`predict_batch` runs images on concurrently (throughput on folders and videos);
            :meth:`predict` uses the first. 1 (default) compiles without the setting.
    """

    def __init__(
        self, path: str | os.PathLike, *, threads: Optional[int] = None, conf: float = 0.0, streams: int = 1
    ) -> None:
        streams = check_streams(streams)
        ov = import_openvino()
        weights = os.path.splitext(os.fspath(path))[0] + ".bin"
        for needed in (os.fspath(path), weights):
            if not os.path.isfile(needed):
                raise DetectFTError(
                    f"model file {needed} not found; pass the .xml that `detect-ft export` wrote, "
                    "with its .bin beside it"
                )
        core = ov.Core()
        try:
            model = core.read_model(os.fspath(path))
        except Exception as exc:  # OpenVINO raises its own exception types for unreadable IRs
            raise DetectFTError(
                f"{path} is not a loadable OpenVINO IR ({str(exc).splitlines()[0]}); re-export it"
            ) from None
        metadata = read_ir_metadata(model, path)
        # fp32 kernels: on CPUs with bf16 units OpenVINO otherwise runs in bf16, which moves scores enough
        # to change which boxes survive NMS (measured: 5 AP points off PyTorch on the test model).
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if streams > 1:
            # OpenVINO splits its threads over NUM_STREAMS streams; one infer request per stream, each run
            # from its own thread (InferRequest.infer releases the GIL), keeps them all busy.
            config["NUM_STREAMS"] = streams
        with kept_signal_stack():
            self.compiled = core.compile_model(model, "CPU", config)
            self._requests = [self.compiled.create_infer_request() for _ in range(streams)]
        self._use_metadata(path, metadata, conf)
        self._use_streams(streams)

    def _infer(self, feed: np.ndarray, stream: int = 0) -> list[np.ndarray]:
        """One graph run on the preprocessed ``feed`` by infer request ``stream``: the metadata's outputs."""
        results = self._requests[stream].infer([feed])
        return [np.asarray(results[self.compiled.output(name)]) for name in self._outputs]

    def __repr__(self) -> str:
        name = self.metadata.get("model_name")
        streams = f", streams={self.streams}" if self.streams > 1 else ""
        return f"OpenVINODetector({self.path!r}, model={name!r}, classes={self.class_names}{streams})"
