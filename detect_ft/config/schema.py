"""The one typed config: dataclass sections loaded from YAML, overridden by dotted ``key=value`` pairs.

    cfg = load_config("configs/demo.yaml", ["train.epochs=5", "data.classes=[cat,dog]"])
    save_config(cfg, run_dir / "config.yaml")     # loads back to an equal Config
    cfg = config_from_dict(checkpoint["config"], overrides, source=f"checkpoint {path}")

Every value is checked against its field's type hint (``Literal`` lists the allowed values) and each
section's ``check()`` before any work starts (:mod:`detect_ft.config.values` does the converting and the
model checks); a mistake raises :class:`ConfigError` with one line naming the key, what was given and
what is allowed. The ``data.on_*`` policies take their choices and defaults from
:mod:`detect_ft.data.checks.findings`. Components never take a ``Config``: callers pass them the plain values
they need.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import yaml

from detect_ft.config.values import (
    apply_model_recipe,
    check_model,
    check_train_values,
    duration_seconds,
    fail,
    input_side,
    model_names,
    positive,
    refuse_coco_for_the_default_model,
    set_key,
)
from detect_ft.data.checks.findings import (
    ALLOWED,
    BOX_OUTSIDE,
    DEFAULT_POLICIES,
    DEGENERATE_BOX,
    DUPLICATE_BOX,
    EXIF_ORIENTATION,
    MISSING_IMAGE,
    OUTSIDE_ROOT,
    SIZE_MISMATCH,
    SMALL_BOX,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
)
from detect_ft.data.formats.yolo_dataset_file import is_yolo_dataset_file, yolo_dataset_section
from detect_ft.inference.slicing import MIN_TILE_SIDE, tiling_problem
from detect_ft.utils.atomic_io import write_text_atomic
from detect_ft.utils.errors import ConfigError
from detect_ft.utils.limits import MAX_CONFIG_BYTES, read_text, short_repr

__all__ = [
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "ModelConfig",
    "OutputConfig",
    "TrainConfig",
    "apply_model_recipe",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_override",
    "safe_yaml",
    "save_config",
]


@dataclass
class ModelConfig:
    # the default works offline (ImageNet weights from a package) and its recipe was chosen on four datasets
    name: str = "ssdlite320_efficientnet_lite0"
    # coco | imagenet | none | path to a state dict or detect-ft checkpoint; unset: the model's recipe may choose
    weights: str = "coco"
    backbone: str = ""  # timm models only: another timm backbone (e.g. convnext_atto); "" = the model's own
    init_from_coco_names: bool = True  # start head rows of classes named like COCO classes from COCO rows
    trainable_backbone_layers: Optional[int] = None  # torchvision semantics; None = torchvision default
    frozen_bn: Optional[bool] = None  # freeze backbone BatchNorm; None: as torchvision does for this model
    min_size: Optional[int] = None  # model input size (short side / square side); None = model default
    max_size: Optional[int] = None
    score_thresh: Optional[float] = None  # model-internal score threshold; None = model default
    detections_per_img: int = 100
    # auto: fit anchor sizes/ratios to the training boxes when training starts (docs/fine-tuning.md)
    anchors: Literal["default", "auto"] = "default"
    anchor_sizes: list[list[float]] = field(default_factory=list)  # the anchors used; [] = the model's own
    anchor_ratios: list[list[float]] = field(default_factory=list)  # (anchors=auto records its fit here)

    def check(self) -> None:
        check_model(self)


@dataclass
class DataConfig:
    format: Literal["coco", "voc", "yolo"] = "coco"
    root: str = ""  # dataset folder; relative paths below are resolved against it
    train: str = ""  # coco: annotation JSON; voc: split name or list file; yolo: split folder or list file
    val: str = ""
    images: str = ""  # coco: image folder (default: the JSON's folder); unused by voc/yolo
    classes: list[str] = field(default_factory=list)  # empty: take the names from the dataset
    keep_background: bool = True  # keep images without boxes
    # What to do about each kind of problem the dataset doctor finds (detect_ft.data.checks.doctor). The allowed
    # values and defaults are defined once, in detect_ft.data.checks.findings (ALLOWED, DEFAULT_POLICIES).
    on_missing_image: Literal[ALLOWED[MISSING_IMAGE]] = DEFAULT_POLICIES["on_missing_image"]
    # corrupt/truncated/too large, also found mid-training
    on_unreadable_image: Literal[ALLOWED[UNREADABLE_IMAGE]] = DEFAULT_POLICIES["on_unreadable_image"]
    # apply: boxes in the rotated frame
    on_exif_orientation: Literal[ALLOWED[EXIF_ORIENTATION]] = DEFAULT_POLICIES["on_exif_orientation"]
    # image paths absolute or leaving data.root
    on_outside_root: Literal[ALLOWED[OUTSIDE_ROOT]] = DEFAULT_POLICIES["on_outside_root"]
    on_size_mismatch: Literal[ALLOWED[SIZE_MISMATCH]] = DEFAULT_POLICIES["on_size_mismatch"]
    on_degenerate_box: Literal[ALLOWED[DEGENERATE_BOX]] = DEFAULT_POLICIES["on_degenerate_box"]
    on_box_outside: Literal[ALLOWED[BOX_OUTSIDE]] = DEFAULT_POLICIES["on_box_outside"]
    on_duplicate_box: Literal[ALLOWED[DUPLICATE_BOX]] = DEFAULT_POLICIES["on_duplicate_box"]
    # far smaller than the class's median box
    on_small_box: Literal[ALLOWED[SMALL_BOX]] = DEFAULT_POLICIES["on_small_box"]
    on_unknown_class: Literal[ALLOWED[UNKNOWN_CLASS]] = DEFAULT_POLICIES["on_unknown_class"]

    def check(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            fail("data.classes", self.classes, "distinct class names")
        from detect_ft.data.records import BACKGROUND_NAMES, is_background_name

        for name in self.classes:
            if is_background_name(name):
                fail(
                    "data.classes",
                    self.classes,
                    f"class names other than {', '.join(sorted(BACKGROUND_NAMES))} "
                    f"(case-insensitive; label 0 is the background in every model, so rename class {name!r})",
                )


@dataclass
class AugmentConfig:
    preset: Literal["none", "light", "ssd", "strong"] = "light"
    min_area: float = 4.0  # boxes smaller than this (pixels^2) after augmentation are dropped
    min_visibility: float = 0.2  # boxes keeping less than this fraction of their area are dropped
    crop_size: int = 0  # train on random crop_size x crop_size crops of the original pixels (0: off)

    def check(self) -> None:
        if self.min_area < 0:
            fail("augment.min_area", self.min_area, "a number >= 0")
        if not 0 <= self.min_visibility <= 1:
            fail("augment.min_visibility", self.min_visibility, "a number in [0, 1]")
        if self.crop_size:
            input_side("augment.crop_size", self.crop_size, "0 (off)")


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 8
    lr: float = 0.01
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 1.0  # backbone LR = lr * this (discriminative learning rates)
    scheduler: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup_iters: Optional[int] = None  # None: 5% of the run's optimizer steps, at most 1000 (engine.optim)
    milestones: list[int] = field(default_factory=list)  # epochs, for scheduler=multistep
    gamma: float = 0.1
    clip_grad_norm: Optional[float] = None
    accumulate: int = 1  # gradient accumulation steps
    freeze_backbone_epochs: int = 0  # train only the heads for this many epochs, then unfreeze
    # or for this share of the run's epochs (a time-budgeted run's too); freeze_backbone_epochs wins when set
    freeze_backbone_fraction: float = 0.0
    # the run's whole wall time ("90s", "10m", "1.5h"; "" = off): train.epochs is then derived (engine.budget)
    time_budget: str = ""
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler)
    channels_last: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    eval_interval: Optional[int] = None  # validate every N epochs (0: never); None: about 10 times a run
    best_metric: Literal["map", "map50", "map75"] = "map"
    patience: int = 0  # early stopping after N validations without improvement (0: off)
    max_nonfinite: int = 10  # stop after this many non-finite losses in a row
    resume: str = ""  # "" | auto | path to a checkpoint
    sync_bn: bool = False
    aspect_ratio_grouping: bool = False
    max_iters_per_epoch: Optional[int] = None  # cap iterations per epoch (quick runs, tests)
    multi_scale: list[int] = field(default_factory=list)  # input sizes, one drawn per batch (empty: off)
    repeat_threshold: float = 0.0  # class-balanced repeat-factor sampling (data.sampling); 0: off
    # experiment tracking (engine.tracking; pip install 'detect-ft[track]'): none | mlflow
    track: Literal["none", "mlflow"] = "none"
    track_uri: str = ""  # "": MLFLOW_TRACKING_URI, else sqlite:///<output.dir's parent>/mlflow.db
    track_experiment: str = ""  # "": the dataset folder's name (data.root), else detect-ft

    def check(self) -> None:
        for key in ("epochs", "batch_size", "accumulate", "max_nonfinite"):
            positive(f"train.{key}", getattr(self, key))
        for key in ("workers", "warmup_iters", "freeze_backbone_epochs", "eval_interval", "patience"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                fail(f"train.{key}", getattr(self, key), "an integer >= 0")
        if self.lr <= 0:
            fail("train.lr", self.lr, "a number > 0")
        if self.backbone_lr_mult < 0:
            fail("train.backbone_lr_mult", self.backbone_lr_mult, "a number >= 0")
        if not 0 < self.ema_decay < 1:
            fail("train.ema_decay", self.ema_decay, "a number in (0, 1)")
        if self.max_iters_per_epoch is not None:
            positive("train.max_iters_per_epoch", self.max_iters_per_epoch)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            fail("train.device", self.device, "auto, cpu, cuda or cuda:N")
        check_train_values(self)
        if not 0 <= self.freeze_backbone_fraction < 1:
            fail("train.freeze_backbone_fraction", self.freeze_backbone_fraction, "a number in [0, 1)")
        duration_seconds("train.time_budget", self.time_budget)


@dataclass
class EvalConfig:
    backend: Literal["faster_coco_eval", "hotcoco", "pycocotools"] = "hotcoco"  # fastest exact (docs/benchmarks.md)
    batch_size: int = 8
    score_thresh: float = 0.001  # detections below this score are not scored
    plots: bool = True
    # sliced inference for small objects (docs/deploy.md): tiles of `slice` pixels; 0 runs whole images only
    slice: int = 0
    slice_overlap: float = 0.2  # fraction of a tile shared with its neighbour
    slice_merge: Literal["nms", "greedy"] = "nms"  # class-wise NMS (IoU) or greedy merging (IoS) of duplicates
    slice_merge_iou: float = 0.5
    slice_full_image: bool = True  # also run the whole image (large objects) and merge it with the tiles

    def check(self) -> None:
        positive("eval.batch_size", self.batch_size)
        if not 0 <= self.score_thresh < 1:
            fail("eval.score_thresh", self.score_thresh, "a number in [0, 1)")
        problem = tiling_problem(self.slice or MIN_TILE_SIDE, self.slice_overlap)  # slice 0: whole images only
        if problem is not None:
            key, allowed = problem
            fail(f"eval.{key}", getattr(self, key), allowed + (", or 0 for no slicing" if key == "slice" else ""))
        if not 0 < self.slice_merge_iou <= 1:
            fail("eval.slice_merge_iou", self.slice_merge_iou, "a number in (0, 1]")


@dataclass
class ExportConfig:
    opset: int = 17
    verify: bool = True
    max_map_drop: float = 0.5  # AP points the ONNX model may lose against PyTorch before export fails
    calib_images: int = 32  # INT8 calibration images from the training split
    # INT8 (detect-ft export --int8; detect_ft.export.quantize.Int8Options, docs/benchmarks.md)
    int8_max_map_drop: float = 1.0  # AP points INT8 may lose vs the fp32 ONNX model before it is refused
    int8_format: Literal["qdq", "qoperator"] = "qdq"
    int8_calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    int8_per_channel: bool = True
    int8_reduce_range: bool = False
    int8_ops: Literal["fused", "conv"] = "fused"  # fused: Conv + Clip/Relu/Add/Pad; conv: Conv/MatMul/Gemm only
    int8_exclude: list[str] = field(default_factory=list)  # kept fp32: first | last | head | node-name substrings

    def check(self) -> None:
        if not 11 <= self.opset <= 21:
            fail("export.opset", self.opset, "an integer in 11..21")
        positive("export.calib_images", self.calib_images)
        for key in ("max_map_drop", "int8_max_map_drop"):
            if getattr(self, key) < 0:
                fail(f"export.{key}", getattr(self, key), "a number of AP points >= 0")


@dataclass
class OutputConfig:
    dir: str = "runs/exp"  # a folder already holding files gets a new numbered sibling (runs/exp-2), see train
    overwrite: bool = False  # reuse a dir holding an earlier run, removing that run's checkpoints, metrics, plots


@dataclass
class Config:
    """Every section. ``applied_recipe`` (not a field: never saved) lists the ``key=value`` settings that
    the model's recipe filled in because the config left them unset."""

    applied_recipe: ClassVar[tuple[str, ...]] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def check(self) -> None:
        for section in dataclasses.fields(self):
            check = getattr(getattr(self, section.name), "check", None)
            if check is not None:
                check()


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus floats in scientific notation without a dot (``1e-3``).

    YAML 1.1, which PyYAML implements, reads ``1e-3`` as a string; everyone writing a learning rate
    means the number.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_yaml(text: str) -> Any:
    """Parse YAML with the safe loader that also reads ``1e-3`` as a float (no Python objects, ever)."""
    return yaml.load(text, Loader=_Loader)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: the problem and where, without PyYAML's multi-line context."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1} column {mark.column + 1}" if mark is not None else str(problem)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``; the value is read as YAML (``[a,b]`` is a list,
    ``1e-3`` a float)."""
    if "=" not in text:
        raise ConfigError(f"override {short_repr(text)} is not of the form key=value (for example train.epochs=5)")
    key, raw = text.split("=", 1)
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {short_repr(text)}: value is not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"override {short_repr(text)}: value is nested too deeply") from None
    return key.strip(), value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then each ``key=value`` override, then the model's
    recipe for every key still unset (:func:`apply_model_recipe`); then check. An Ultralytics dataset file
    (``data.yaml`` with ``names``, ``train``, ``val``) stands for the ``data`` section it describes."""
    if path is None:
        return config_from_dict({}, overrides)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass a YAML file such as configs/demo.yaml")
    text = read_text(path, MAX_CONFIG_BYTES, "config file", ConfigError)
    try:
        data = safe_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a detect-ft config") from None
    if is_yolo_dataset_file(data, [f.name for f in dataclasses.fields(Config)]):  # stands for its data section
        need_train = not any(parse_override(text)[0] == "data.train" for text in overrides or [])
        section = yolo_dataset_section(path, data, need_train=need_train)
        return config_from_dict({"data": section}, overrides, source=f"dataset file {path}")
    return config_from_dict(data, overrides, source=f"config file {path}")


def config_from_dict(data: Any, overrides: list[str] | None = None, source: str = "the config") -> Config:
    """Defaults, then ``data`` (``{section: {key: value}}``, as read from YAML or saved in a checkpoint by
    :func:`config_to_dict`), then each ``key=value`` override, then the model's recipe for every key still
    unset; then check. The same checks and messages as :func:`load_config`; ``source`` names where
    ``data`` came from (``config file configs/demo.yaml``, ``checkpoint best.pt``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of sections, got {type(data).__name__}")
    cfg = Config()
    explicit: set[str] = set()
    for section, values in data.items():
        if not isinstance(values, dict):
            fail(short_repr(section), values, "a mapping of keys, for example train: {epochs: 5}")
        for key, value in values.items():
            set_key(cfg, f"{section}.{key}", value)
            explicit.add(f"{section}.{key}")
    overridden = set()
    for text in overrides or []:
        key, value = parse_override(text)
        set_key(cfg, key, value)
        overridden.add(key)
    if "train.epochs" in overridden and "train.time_budget" not in overridden:
        cfg.train.time_budget = ""  # a number of epochs given on top of a file's time budget replaces it
    explicit |= overridden
    if cfg.model.name in model_names():
        cfg.applied_recipe = tuple(apply_model_recipe(cfg, explicit))
    if "model.name" not in explicit and cfg.model.weights == "coco":
        refuse_coco_for_the_default_model(cfg.model.name, source)
    cfg.check()
    return cfg


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically; ``load_config(path)`` gives an equal Config."""
    write_text_atomic(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
