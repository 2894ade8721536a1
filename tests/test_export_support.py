"""Shared fixtures of the export, edge and predict tests (no tests here).

Random-init detectors score nearly every box alike (see ``calibrate_batchnorm``), so which of two near-tied boxes survives NMS or the
top-k cut can legitimately differ between PyTorch and onnxruntime. ``separated_model`` multiplies the
class-head weights by a gain, which spreads the logits and so the scores far apart (the ordering becomes
robust to 1e-6 numeric differences). ``pseudo_labelled_split`` then makes the validation ground truth
the PyTorch model's own confident detections, so PyTorch scores a high mAP and any exported graph that
does not reproduce the model (wrong colour order, resize, boxes) visibly loses mAP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detect_ft.config.schema import Config, config_to_dict
from detect_ft.data.convert import write_split
from detect_ft.data.image import read_image
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.data.synthetic import make_synthetic_dataset
from detect_ft.evaluation.evaluator import evaluate_model, torch_predictor
from detect_ft.models import MODELS, build_model

CLASSES = ["circle", "square"]
CATEGORY_IDS = [5, 9]  # not 1..K, so tests see the ids mapped back
FAST_MODELS = [
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_efficientnet_lite0",
]


def model_options(name: str, side: int = 128) -> dict:
    if name == "ssd300_vgg16":
        return {}
    if MODELS[name].fixed_size:
        return {"min_size": side}
    return {"min_size": side, "max_size": side * 5 // 4}


def separated_model(name: str, *, side: int = 128, gain: float = 2.0, seed: int = 0, **options) -> torch.nn.Module:
    """A fixed-seed random detector whose class scores are spread apart (see the module docstring)."""
    torch.manual_seed(seed)
    model = build_model(
        name, len(CLASSES), weights="none", class_names=CLASSES, **{**model_options(name, side), **options}
    )
    calibrate_batchnorm(model)
    spec = MODELS[name]
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if spec.is_head_key(key) and key.endswith("weight") and "bbox_pred" not in key:
                tensor.mul_(gain)
    return model.eval()


def calibrate_batchnorm(model: torch.nn.Module, images: int = 8) -> None:
    """Set every BatchNorm's running statistics from a few random images.

    A random-init network in eval mode uses running variance 1 where the true variance is tiny, so the
    features shrink layer by layer to ~1e-20 and every box gets the same score.
    """
    generator = torch.Generator().manual_seed(0)
    batch = [torch.rand(3, 96, 128, generator=generator) for _ in range(images)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
        norm.train()
    with torch.no_grad():
        model(batch)
    model.eval()


def write_checkpoint(
    model: torch.nn.Module, name: str, path: Path, data_root: Path, side: int = 128, metrics: dict | None = None
) -> Path:
    """A detect-ft checkpoint (docs/architecture.md) of ``model`` whose config points at ``data_root``, with
    ``metrics`` (a validation's, holding the deployment thresholds) when given."""
    cfg = Config()
    cfg.model.name = name
    cfg.model.weights = "none"
    for key, value in model_options(name, side).items():
        setattr(cfg.model, key, value)
    cfg.data.format, cfg.data.root, cfg.data.train, cfg.data.val = "coco", str(data_root), "train.json", "val.json"
    cfg.data.classes = list(CLASSES)
    cfg.export.calib_images = 2
    torch.save(
        {
            "model": model.state_dict(),
            "model_name": name,
            "num_classes": len(CLASSES),
            "class_names": list(CLASSES),
            "category_ids": list(CATEGORY_IDS),
            "config": config_to_dict(cfg),
            "epoch": 1,
            "iteration": 1,
            "version": "test",
            **({"metrics": metrics} if metrics else {}),
        },
        path,
    )
    return path


def synthetic_root(tmp_path: Path, num_train: int = 2, num_val: int = 4, size=(128, 96)) -> Path:
    return make_synthetic_dataset(
        tmp_path / "data", num_train=num_train, num_val=num_val, image_size=size, classes=CLASSES, format="coco", seed=3
    )


def pseudo_labelled_split(model: torch.nn.Module, root: Path, min_score: float = 0.3, top: int = 5) -> DatasetRecords:
    """Rewrite ``root/val.json`` so its boxes are the model's ``top`` detections above ``min_score``."""
    from detect_ft.data.load import load_split

    val, _ = load_split(
        format="coco", root=root, split="val.json", images="", classes=list(CLASSES), keep_background=True
    )
    predict = torch_predictor(model, "cpu")
    records = []
    for record in val.records:
        pred = predict([read_image(record.image_path)])[0]
        keep = np.flatnonzero(pred["scores"] >= min_score)[:top]
        records.append(
            ImageRecord(
                record.image_path,
                record.width,
                record.height,
                pred["boxes"][keep],
                pred["labels"][keep],
                image_id=record.image_id,
                file_name=record.file_name,
            )
        )
    dataset = DatasetRecords(records, list(CLASSES), source=str(root / "val.json"))
    write_split(dataset, "coco", root, "val", "none")
    return dataset


def exported_model(
    tmp_path: Path, name: str = "ssdlite320_mobilenet_v3_large", overrides: tuple[str, ...] = ()
) -> dict:
    """Checkpoint, pseudo-labelled data and a verified ``model.onnx`` + ``model.int8.onnx`` written by
    ``detect-ft export --int8 OVERRIDES``; ``images`` is the data's image folder (train and val images)."""
    from detect_ft.cli.main import main

    model = separated_model(name)
    root = synthetic_root(tmp_path)
    val = pseudo_labelled_split(model, root)
    metrics = evaluate_model(model, val)  # as the trainer's validation stores it, deployment thresholds included
    checkpoint = write_checkpoint(model, name, tmp_path / "model.pt", root, metrics=metrics)
    onnx_path = tmp_path / "out" / "model.onnx"
    assert main(["export", str(checkpoint), "--output", str(onnx_path), "--int8", *overrides]) == 0
    return {
        "model": model,
        "name": name,
        "root": root,
        "val": val,
        "checkpoint": checkpoint,
        "onnx": onnx_path,
        "int8": tmp_path / "out" / "model.int8.onnx",
        "images": root / "images",
    }
