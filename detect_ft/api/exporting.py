"""Export as ``Detector.export`` and ``detect-ft export`` run it: a checkpoint, its config, the checks.

This is an entry point: it reads the :class:`~detect_ft.config.schema.Config` (the checkpoint's own unless another
is given) and hands plain values to :func:`detect_ft.export.pipeline.export_detector`.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

from detect_ft.config.schema import Config
from detect_ft.utils.errors import ConfigError


def export_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    config: Optional[str | os.PathLike] = None,
    overrides: Sequence[str] = (),
    opset: Optional[int] = None,
    verify: bool = True,
    int8: bool = False,
    int8_keep_anyway: bool = False,
    calib_config: Optional[str | os.PathLike] = None,
    progress: bool = True,
    batch: int = 1,
    format: str = "onnx",
) -> dict[str, Any]:
    """Export the detect-ft ``checkpoint`` to ONNX (``format="openvino"``: an OpenVINO IR ``.xml``, INT8 by
    NNCF, :mod:`detect_ft.export.openvino_export`) and return the report.

    The parity split is ``data.val`` of ``config`` (default: the config saved in the checkpoint), with
    ``overrides`` applied; ``verify=False`` or ``export.verify=false`` skips the check. With ``int8`` a
    static INT8 model is written beside it, calibrated on ``data.train`` of ``calib_config`` (default:
    the same config) and gated by ``export.int8_max_map_drop`` unless ``int8_keep_anyway``. The metadata
    carries the class names, the backbone and the validated per-class thresholds. ``batch``: images per
    graph run (:func:`~detect_ft.export.pipeline.export_detector`). A checkpoint of a run tracked in MLflow
    (``<run_dir>/checkpoints/*.pt`` beside ``<run_dir>/mlflow.json``) gets the exported files and the report
    added to that run (:func:`~detect_ft.engine.tracking.log_export`).

    Raises:
        Int8RefusedError: the INT8 model lost too much mAP (the fp32 model was written; see its report).
    """
    from detect_ft.models import load_detector

    _exporter(format, int8)  # refuses a bad format or a missing openvino/nncf before any work
    model, meta = load_detector(checkpoint)
    cfg = load_config_for(checkpoint, meta, config, list(overrides))
    opset = cfg.export.opset if opset is None else opset
    if not 11 <= opset <= 21:
        raise ConfigError(f"export opset {opset}: torchvision detectors export at opsets 11..21; use opset 17")
    class_names = list(meta["class_names"])
    source = str(config or checkpoint)
    val = _split(cfg, "val", class_names, source) if verify and cfg.export.verify else None
    calib = _calibration(calib_config, cfg, class_names, source) if int8 else None
    return _tracked(
        checkpoint,
        _exporter(format, int8),
        model,
        output,
        model_name=meta["model_name"],
        class_names=class_names,
        category_ids=meta.get("category_ids"),
        opset=opset,
        val_dataset=val,
        int8=int8,
        calib_images=calib,
        **_check_settings(cfg),
        int8_keep_anyway=int8_keep_anyway,
        extra_metadata=_metadata(checkpoint, meta, cfg),
        progress=progress,
        batch=batch,
    )


def _check_settings(cfg: Config) -> dict[str, Any]:
    """The export checks' settings in ``cfg``: the parity tolerance and scoring, the INT8 options and gate."""
    return {
        "max_map_drop": cfg.export.max_map_drop,
        "score_thresh": cfg.eval.score_thresh,
        "backend": cfg.eval.backend,
        "int8_options": int8_options(cfg),
        "int8_max_map_drop": cfg.export.int8_max_map_drop,
    }


def _tracked(checkpoint, exporter, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``exporter(*args, **kwargs)``'s report, the export added to the MLflow run that trained ``checkpoint``
    when it was tracked: a refused INT8 model's fp32 file and report too, before the refusal is raised."""
    from detect_ft.engine.tracking import log_export
    from detect_ft.export.pipeline import Int8RefusedError

    try:
        report = exporter(*args, **kwargs)
    except Int8RefusedError as exc:
        log_export(checkpoint, exc.report)
        raise
    log_export(checkpoint, report)
    return report


def _exporter(format: str, int8: bool):
    """``export_detector`` for ``onnx``, ``export_openvino`` for ``openvino`` (checked before any work:
    the openvino package, and nncf with ``int8``, are importable)."""
    from detect_ft.export.pipeline import export_detector

    if format == "onnx":
        return export_detector
    if format != "openvino":
        raise ConfigError(f"export format {format!r}: choose onnx or openvino")
    from detect_ft.inference.openvino_runtime import import_openvino

    import_openvino()
    from detect_ft.export.openvino_export import export_openvino
    from detect_ft.export.openvino_int8 import import_nncf

    if int8:
        import_nncf()
    return export_openvino


def load_config_for(checkpoint, meta: dict, config, overrides: list[str]) -> Config:
    """``config`` (a YAML file) with ``overrides``, or else the config saved in the checkpoint."""
    from detect_ft.config.schema import config_from_dict, load_config

    if config:
        return load_config(config, overrides)
    saved = meta.get("config") or {}
    if not isinstance(saved, dict):
        raise ConfigError(f"{checkpoint}: its 'config' entry is not a mapping; give a config file instead")
    try:
        return config_from_dict(saved, overrides, source=f"checkpoint {checkpoint}")
    except ConfigError as exc:
        raise ConfigError(f"{checkpoint}: the saved config does not load ({exc}); give a config file instead") from None


def int8_options(cfg: Config):
    from detect_ft.export.quantize import Int8Options

    ex = cfg.export
    return Int8Options(
        format=ex.int8_format,
        per_channel=ex.int8_per_channel,
        calibration=ex.int8_calibration,
        reduce_range=ex.int8_reduce_range,
        ops=ex.int8_ops,
        exclude=tuple(ex.int8_exclude),
    )


def _split(cfg: Config, which: str, class_names: list[str], source: str):
    from detect_ft.data.split import SplitSpec, load_checked_split

    split = getattr(cfg.data, which)
    if not split:
        why = (
            "there is no split for the parity check; use a config with data.val set, or set export.verify=false"
            if which == "val"
            else "INT8 calibration reads training images; use a config with data.train set"
        )
        raise ConfigError(f"{source}: config key 'data.{which}' is empty, so {why}")
    dataset, _ = load_checked_split(SplitSpec.from_config(cfg.data), split, class_names, decode=True)
    return dataset


def _calibration(calib_config, cfg: Config, class_names: list[str], source: str) -> list[np.ndarray]:
    from detect_ft.config.schema import load_config

    calib_cfg = load_config(calib_config) if calib_config else cfg
    dataset = _split(calib_cfg, "train", class_names, str(calib_config or source))
    return calibration_images(dataset, calib_cfg.export.calib_images)


def calibration_images(dataset, count: int) -> list[np.ndarray]:
    """``count`` RGB uint8 images spread evenly over the split (the whole split when it is smaller)."""
    from detect_ft.data.image import read_image

    records = dataset.records
    index = np.unique(np.linspace(0, len(records) - 1, num=min(count, len(records))).round().astype(int))
    return [read_image(records[i].image_path, apply_orientation=records[i].apply_orientation) for i in index]


def _metadata(checkpoint, meta: dict, cfg: Config) -> dict[str, Any]:
    from detect_ft.models import MODELS

    spec = MODELS.get(meta["model_name"])
    backbone = (cfg.model.backbone or spec.timm_backbone) if spec is not None and spec.timm_backbone else None
    from detect_ft.evaluation.thresholds import stored_thresholds
    from detect_ft.inference.predictions import pooled_threshold_classes

    extra = {"source_checkpoint": str(checkpoint), "epoch": meta.get("epoch"), "backbone": backbone}
    thresholds = stored_thresholds(meta.get("metrics"), list(meta["class_names"]))
    if thresholds is not None:
        extra["thresholds"] = thresholds
        extra["pooled_thresholds"] = pooled_threshold_classes(meta, list(meta["class_names"]))
    return extra
