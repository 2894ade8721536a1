"""``Detector``: the one public entry point for training, prediction, evaluation and export from Python.

    from detect_ft import Detector

    detector = Detector.create("ssdlite320_efficientnet_lite0", classes=["raccoon"], weights="imagenet")
    run = detector.train("configs/demo.yaml", epochs=5)       # fine-tunes, then loads run.best_checkpoint
    results = detector.predict("photos/")                      # list[Result]: boxes, scores, names, .plot()
    metrics = detector.evaluate("configs/demo.yaml")           # the eval command's metrics dict
    detector.export("raccoon.onnx")                            # verified ONNX
    Detector.load("raccoon.onnx").predict("photo.jpg")[0].save("annotated.jpg")

A checkpoint runs in PyTorch, an ``.onnx`` file through the torch-free edge runtime; both give the same
:class:`~detect_ft.inference.results.Result` objects. The command line calls these methods.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from detect_ft.api.train import TrainRun, train_config
from detect_ft.inference.predictions import PredictBatch, as_detections, is_class_thresholds, predict_in_groups
from detect_ft.inference.results import Result
from detect_ft.inference.runtime import check_streams
from detect_ft.inference.slicing import SliceOptions
from detect_ft.inference.sources import Source, iter_frames
from detect_ft.utils.errors import ArgumentTypeError, ConfigError, DetectFTError

if TYPE_CHECKING:
    from detect_ft.api.options import ConfigSource

DEFAULT_CONF = 0.3  # for models that store no validated thresholds


class Detector:
    """A detector with its class names, ready to predict; see the module doc. Build with :meth:`load` or
    :meth:`create`, not directly.

    Attributes:
        model_name: the registry name; ``class_names`` the K classes (label k is ``class_names[k - 1]``);
        category_ids: their original dataset ids; ``thresholds`` one validated confidence per class, or
        None; ``source``: the file it was loaded from (None for :meth:`create`); ``model``: the torch
        module (None for ONNX).
    """

    def __init__(
        self,
        *,
        predict_batch: PredictBatch,
        model_name: str,
        class_names: Sequence[str],
        category_ids: Optional[Sequence[int]] = None,
        thresholds: Optional[Sequence[float]] = None,
        source: Optional[str] = None,
        model: Any = None,
        weights: str = "none",
        device: str = "cpu",
        metadata: Optional[dict] = None,
    ) -> None:
        self.predict_batch = predict_batch
        self.model_name = model_name
        self.class_names = list(class_names)
        self.category_ids = list(category_ids or range(1, len(self.class_names) + 1))
        self.thresholds = _checked_thresholds(thresholds, self.class_names, source)
        self.source = source
        self.model = model
        self.weights = weights  # what a further train() starts from
        self.device = device
        self.metadata = dict(metadata or {})
        self.model_options: dict[str, Any] = {}

    # -- building ---------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device: str = "auto", threads: Optional[int] = None, streams: int = 1
    ) -> "Detector":
        """A trained detector from a detect-ft checkpoint (``best.pt``; PyTorch on ``device``), an exported
        ``.onnx`` model (onnxruntime, ``threads`` intra-op threads) or an OpenVINO IR ``.xml`` exported with
        ``--format openvino`` (OpenVINO on the CPU; needs ``detect-ft[openvino]``); torch is not imported
        for exported models. ``streams`` > 1 (exported models only) runs that many copies of the model in
        parallel on the images of one ``predict(..., batch=N)`` call: throughput on folders and videos
        (e.g. 2 on a 2-core CPU), for N times the model's memory."""
        from detect_ft.api.options import device_argument, path_argument

        what = "a detect-ft checkpoint (.pt), an exported .onnx model or an OpenVINO .xml"
        path = path_argument("Detector.load", "path", path, what)
        device_argument("Detector.load", device)
        streams = check_streams(streams)
        if Path(path).suffix.lower() in (".onnx", ".xml"):
            edge = _exported_runtime(path, device, threads, streams)
            meta = edge.metadata
            return cls(
                predict_batch=edge.predict_batch,
                model_name=meta.get("model_name", "?"),
                class_names=edge.class_names,
                category_ids=edge.category_ids,
                thresholds=meta.get("thresholds"),
                source=path,
                metadata=meta,
                device=device,
            )
        from detect_ft.evaluation.evaluator import torch_predictor
        from detect_ft.evaluation.thresholds import stored_thresholds
        from detect_ft.models import load_detector

        if streams != 1:
            raise ConfigError(
                f"Detector.load: streams={streams!r} is for exported models (.onnx, .xml); load {path} "
                "with streams=1 or export it first"
            )
        device = _torch_device(device)
        model, meta = load_detector(path, map_location="cpu")
        thresholds = stored_thresholds(meta.get("metrics"), list(meta["class_names"]))
        return cls(
            predict_batch=torch_predictor(model, device),
            model_name=meta["model_name"],
            class_names=meta["class_names"],
            category_ids=meta.get("category_ids"),
            thresholds=thresholds,
            source=path,
            model=model,
            weights=path,
            device=device,
            metadata=meta,
        )

    @classmethod
    def create(
        cls,
        name: str,
        *,
        classes: Sequence[str],
        weights: Optional[str] = None,
        device: str = "auto",
        **model_options: Any,
    ) -> "Detector":
        """A new detector ``name`` (see ``detect-ft models``) with class heads for ``classes``.

        ``weights``: ``coco`` (torchvision's COCO detector; heads of classes named like a COCO class start
        from that class's row), ``imagenet`` (backbone only), ``none``, or a file (state dict or detect-ft
        checkpoint); None: the model's own pretrained start, the one ``detect-ft models`` lists (``coco``
        for torchvision's detectors, ``imagenet`` for those on timm backbones). ``model_options`` go to
        :func:`detect_ft.models.build_model` (e.g. ``min_size``), and to :meth:`train` as ``model.*`` config
        keys.
        """
        from detect_ft.api.options import class_names_argument, device_argument, model_options_argument, path_argument
        from detect_ft.evaluation.evaluator import torch_predictor
        from detect_ft.models import MODELS, build_model
        from detect_ft.models.zoo import default_weights

        where = "Detector.create"
        if not isinstance(name, str):
            raise ArgumentTypeError(f"{where}: name must be a model name (see detect-ft models), got {name!r}")
        classes = class_names_argument(where, classes)
        if weights is None:  # the value train() passes on as model.weights; an unknown name: build_model says so
            weights = default_weights(MODELS[name]) if name in MODELS else "none"
        weights = path_argument(where, "weights", weights, "coco, imagenet, none or the path of a weights file")
        model_options = model_options_argument(where, name, model_options)
        device = _torch_device(device_argument(where, device))
        model = build_model(name, len(classes), weights=weights, class_names=classes, **model_options)
        created = cls(
            predict_batch=torch_predictor(model, device),
            model_name=name,
            class_names=classes,
            model=model,
            weights=weights,
            device=device,
        )
        created.model_options = dict(model_options)  # train() passes them on as model.* config keys
        return created

    # -- prediction -------------------------------------------------------------------------------------

    def confidence(self, conf: Optional[float] = None) -> tuple[float | list[float], str]:
        """The score threshold(s) :meth:`predict` applies, and a sentence saying where they come from."""
        if conf is not None:
            from detect_ft.api.options import score_argument

            conf = score_argument("predict", conf)
            return conf, f"confidence {conf:g} (given)"
        if self.thresholds is not None:
            from detect_ft.inference.predictions import describe_thresholds, pooled_threshold_classes

            pooled = pooled_threshold_classes(self.metadata, self.class_names)
            shown = describe_thresholds(self.class_names, self.thresholds, pooled)
            return list(self.thresholds), f"per-class F1-optimal confidence from validation ({shown})"
        return DEFAULT_CONF, f"confidence {DEFAULT_CONF} (the default: this model stores no validated thresholds)"

    def stream(
        self,
        source: Source,
        conf: Optional[float] = None,
        classes: Optional[Sequence[str]] = None,
        *,
        slice: Optional[int] = None,
        overlap: float = 0.2,
        merge: str = "nms",
        full_image: bool = True,
        merge_iou: float = 0.5,
        batch: int = 1,
    ) -> Iterator[Result]:
        """:meth:`predict` as a generator, in order; each Result keeps its ``image``. Up to ``batch``
        images or frames are read ahead and run together (see :meth:`predict`)."""
        threshold, _ = self.confidence(conf)
        keep_labels = self._labels_of(classes)
        minimum = np.asarray(threshold if isinstance(threshold, list) else [threshold] * len(self.class_names))
        predict_batch = self.predict_batch
        if slice:
            predict_batch = SliceOptions(slice, overlap, merge, full_image, merge_iou).wrap(predict_batch)
        for frame, found in _batched(iter_frames(source), predict_batch, _batch_argument(batch)):
            det = as_detections(found)
            boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
            keep = scores >= minimum[labels - 1]
            if keep_labels is not None:
                keep &= np.isin(labels, keep_labels)
            order = np.argsort(-scores[keep], kind="stable")
            height, width = frame.image.shape[:2]
            yield Result(
                boxes=boxes[keep][order],
                scores=scores[keep][order],
                labels=labels[keep][order],
                class_names=self.class_names,
                category_ids=self.category_ids,
                height=height,
                width=width,
                path=frame.path,
                frame=frame.frame,
                conf=threshold,
                image=frame.image,
            )

    def predict(
        self,
        source: Source,
        conf: Optional[float] = None,
        classes: Optional[Sequence[str]] = None,
        *,
        slice: Optional[int] = None,
        overlap: float = 0.2,
        merge: str = "nms",
        full_image: bool = True,
        merge_iou: float = 0.5,
        batch: int = 1,
    ) -> list[Result]:
        """Detect objects in ``source``: an image path, a folder, a glob, a video, an RGB uint8 array
        (H, W, 3), or a list of them. One :class:`Result` per image or frame, boxes xyxy in its pixels.

        Args:
            conf: keep detections scoring at least this; default: the model's validated per-class
                thresholds (see :meth:`confidence`), else 0.3.
            classes: keep only these class names.
            slice: sliced inference for small objects in large images (:mod:`detect_ft.inference.slicing`): run on
                ``slice`` x ``slice`` pixel tiles overlapping by the fraction ``overlap``, plus the whole
                image when ``full_image``, and merge the duplicates by ``merge`` (``nms``: class-wise NMS
                at IoU ``merge_iou``; ``greedy``: greedy merging at IoS ``merge_iou``). None or 0: whole
                images only.
            batch: run up to this many images or frames of one size together (PyTorch takes them as one
                list on a GPU, one by one on a CPU, where that is faster; an ONNX model exported with ``--batch N`` runs N per graph call, a batch-1 graph one
                by one). Detections are those of one image at a time, to float rounding.
        """
        results = []
        options = dict(slice=slice, overlap=overlap, merge=merge, full_image=full_image, merge_iou=merge_iou)
        options["batch"] = batch
        for result in self.stream(source, conf, classes, **options):
            if result.path is not None:
                result.image = None  # files are re-read by plot(); a folder is not held in memory
            results.append(result)
        return results

    def _labels_of(self, classes: Optional[Sequence[str]]) -> Optional[np.ndarray]:
        if classes is None:
            return None
        if isinstance(classes, str):
            classes = [classes]  # one name, as Detector.create takes it
        unknown = [c for c in classes if c not in self.class_names]
        if unknown:
            raise ConfigError(f"classes {unknown} are not classes of this model; choose from {self.class_names}")
        return np.asarray([self.class_names.index(c) + 1 for c in classes], np.int64)

    # -- training, evaluation, export ---------------------------------------------------------------------

    def train(
        self, config: ConfigSource = None, *, progress: bool = True, hooks: Sequence[Any] = (), **overrides: Any
    ) -> TrainRun:
        """Fine-tune this detector as ``config`` (YAML path, dict or Config) and ``overrides`` say, then load
        the run's best checkpoint into this object.

        ``hooks``: :class:`detect_ft.engine.hooks.Hook` objects called around the epochs and batches, after
        the built-in ones (see that module). The epoch lines are ``logging`` records of the ``detect_ft``
        loggers; with no logging configured they show on stdout.

        Overrides are config keys, dotted (``**{"train.lr": 0.01}``) or by a name unique across the
        config's sections (``epochs=5``, ``lr=0.01``). The model name, its classes and its current weights
        (the loaded checkpoint, or ``create``'s weights) override the config's.
        """
        from detect_ft.api.options import dotted_overrides, resolve_config

        self._needs_torch("train")
        keys = {"model.name": self.model_name, "model.weights": self.weights}
        options = {f"model.{key}": value for key, value in self.model_options.items()}
        cfg = resolve_config(config, {**options, **dotted_overrides(overrides), **keys})
        if cfg.data.classes and list(cfg.data.classes) != self.class_names:
            raise ConfigError(
                f"{config}: data.classes {list(cfg.data.classes)} differ from this detector's classes "
                f"{self.class_names}; remove data.classes or create a detector for those classes"
            )
        cfg.data.classes = list(self.class_names)
        run = train_config(cfg, progress=progress, hooks=hooks)
        trained = Detector.load(run.best_checkpoint, device=self.device)
        self.__dict__.update(trained.__dict__)
        return run

    def evaluate(
        self,
        config: ConfigSource = None,
        *,
        split: str = "val",
        json_path: Optional[str | os.PathLike] = None,
        predictions: Optional[str | os.PathLike] = None,
        progress: bool = False,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Score this detector on ``split`` (``val`` or ``train``) of the config's data (labelled in this
        model's class order): COCO mAPs, VOC AP50, per class, and the deployment ``thresholds``.

        ``json_path``: also write the metrics there, and ``thresholds.json`` (P/R/F1 against confidence)
        and the plots (``eval.plots``) beside it; ``predictions``: also write the detections as COCO results.
        """
        from detect_ft.api.evaluate import evaluate_config
        from detect_ft.api.options import dotted_overrides, resolve_config

        cfg = resolve_config(config, dotted_overrides(overrides))
        return evaluate_config(
            self.predict_batch,
            cfg,
            class_names=self.class_names,
            split=split,
            source=str(self.source or self.model_name),
            model_name=self.model_name,
            json_path=None if json_path is None else Path(json_path),
            predictions_path=None if predictions is None else Path(predictions),
            progress=progress,
        )

    def export(
        self,
        path: str | os.PathLike,
        *,
        int8: bool = False,
        config: Optional[str | os.PathLike] = None,
        verify: bool = True,
        progress: bool = False,
        batch: int = 1,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Export to ONNX at ``path`` (and ``<path stem>.int8.onnx`` with ``int8``), checked against PyTorch
        on ``data.val`` of ``config`` (a YAML file; default the checkpoint's own config), with the validated
        per-class thresholds in its metadata. Returns the export report (parity, mAPs, latencies).

        ``batch``: images per graph run, fixed in the graph's input (``batch x 3 x H x W``; 1 to 64, as
        ``detect-ft export --batch``). A batch graph speeds up ``predict(..., batch=N)`` on folders and videos
        of same-size images, while one image alone costs a whole batch; INT8 is exported at batch 1 only.

        Raises:
            Int8RefusedError: the INT8 model lost more than ``export.int8_max_map_drop`` AP points
                (pass ``int8_keep_anyway=True`` as an override to keep it).
        """
        from detect_ft.api.exporting import export_checkpoint
        from detect_ft.api.options import dotted_overrides, override_list

        self._needs_torch("export")
        if self.source is None:
            raise DetectFTError("export needs a trained checkpoint: train() or Detector.load('best.pt') first")
        keep = bool(overrides.pop("int8_keep_anyway", False))
        return export_checkpoint(
            self.source,
            path,
            config=config,
            overrides=override_list(dotted_overrides(overrides)),
            verify=verify,
            int8=int8,
            int8_keep_anyway=keep,
            progress=progress,
            batch=batch,
        )

    def _needs_torch(self, what: str) -> None:
        if self.model is None:
            raise DetectFTError(
                f"{self.source} is an {self._kind()} model: it can predict and evaluate but not {what}; "
                "load the checkpoint it was exported from"
            )

    def __repr__(self) -> str:
        kind = self._kind().lower()
        return f"Detector({self.model_name!r}, classes={self.class_names}, {kind}, source={self.source!r})"

    def _kind(self) -> str:
        """``torch``, ``ONNX`` or ``OpenVINO``: what runs this detector."""
        if self.model is not None:
            return "torch"
        return "OpenVINO" if str(self.source).lower().endswith(".xml") else "ONNX"


def _batch_argument(batch: Any) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise ArgumentTypeError(f"predict: batch must be a whole number of images, e.g. batch=8; got {batch!r}")
    if batch < 1:
        raise ConfigError(f"predict: batch={batch}; pass at least 1 image per batch, e.g. batch=8")
    return batch


def _batched(frames: Iterator[Any], predict_batch: PredictBatch, batch: int) -> Iterator[tuple[Any, dict]]:
    """``(frame, detections)`` for each of ``frames`` in order, ``predict_batch`` run on up to ``batch``
    same-size frames at once (:func:`~detect_ft.inference.predictions.predict_in_groups`)."""
    pending: list[Any] = []
    for frame in frames:
        pending.append(frame)
        if len(pending) == batch:
            yield from zip(pending, predict_in_groups(predict_batch, [f.image for f in pending], batch))
            pending = []
    if pending:
        yield from zip(pending, predict_in_groups(predict_batch, [f.image for f in pending], batch))


def _exported_runtime(path: str, device: str, threads: Optional[int], streams: int):
    """The torch-free runtime of an exported file: OpenVINO (CPU) for ``.xml``, onnxruntime for ``.onnx``."""
    from detect_ft.inference.openvino_runtime import OpenVINODetector, is_openvino_model

    if is_openvino_model(path):
        return OpenVINODetector(path, threads=threads, streams=streams)
    from detect_ft.inference.predictions import onnx_providers
    from detect_ft.inference.runtime import EdgeDetector

    return EdgeDetector(path, threads=threads, providers=onnx_providers(device), streams=streams)


def _torch_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _checked_thresholds(thresholds, class_names: list[str], source: Optional[str]) -> Optional[list[float]]:
    if thresholds is None:
        return None
    if not is_class_thresholds(thresholds, len(class_names)):
        raise DetectFTError(
            f"{source}: its stored thresholds {thresholds} do not give one confidence in [0, 1] per "
            f"class ({len(class_names)}); re-export or re-evaluate the model"
        )
    return [float(t) for t in thresholds]
