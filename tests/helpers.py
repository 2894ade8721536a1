"""Plain helpers shared by the test modules (fixtures live in conftest.py): files and data made on the spot,
never downloaded, tiny training configs, and the exported-model recipe behind the ``exported_onnx`` fixture.

Random-init detectors score nearly every box alike (see ``calibrate_batchnorm``), so which of two near-tied
boxes survives NMS or the top-k cut can legitimately differ between PyTorch and onnxruntime.
``separated_model`` multiplies the class-head weights by a gain, which spreads the logits and so the scores
far apart (the ordering becomes robust to 1e-6 numeric differences). ``pseudo_labelled_split`` then makes
the validation ground truth the PyTorch model's own confident detections, so PyTorch scores a high mAP and
any exported graph that does not reproduce the model (wrong colour order, resize, boxes) visibly loses mAP.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from detect_ft.cli.main import main
from detect_ft.config.schema import Config, config_to_dict, load_config
from detect_ft.data.convert import write_split
from detect_ft.data.image import read_image
from detect_ft.data.load import load_split
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.data.synthetic import make_synthetic_dataset
from detect_ft.evaluation.evaluator import evaluate_model, torch_predictor

# torch, onnx and detect_ft.models (seconds to import) load inside the helpers that need them, so a test
# module that only writes files starts at once.

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
# Prepended to a ``python -c`` script: a later ``import torch`` fails, as on a device without torch.
BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -c code args`` in a fresh interpreter at the repository root, output captured as text; its
    stdin is empty, not the caller's (a pytest-xdist worker's stdin is its channel to the controller)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def detections(boxes=(), scores=(), labels=()) -> dict:
    """One image's detections as the evaluators take them: ``boxes`` (N, 4) xyxy pixels float32,
    ``scores`` (N,) float32, ``labels`` (N,) int64 in 1..K."""
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32),
        "labels": np.asarray(labels, np.int64),
    }


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes (to prove a command changed none)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


def write_black_png(path: Path, width: int, height: int) -> Path:
    """A complete, valid all-black RGB PNG of ``width`` x ``height``, compressed row by row without ever
    holding the pixels (20000 x 20000: 5 MB on disk, 1.2 GB decoded; about 2 s to write)."""
    compressor = zlib.compressobj(1)
    rows = (b"\0" * (1 + 3 * width)) * 100  # filter byte 0 + the row's pixels, 100 rows at a time
    data = b"".join(compressor.compress(rows[: len(rows) * min(100, height - y) // 100]) for y in range(0, height, 100))
    data += compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def flat_image(path: Path, width: int = 64, height: int = 48, value: int = 127) -> Path:
    """A one-colour image (grey ``value`` in every channel) written at ``path``, folders made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return path


def noise_image(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    """A noise image (long enough as JPEG to be cut in half and stay decodable by a lenient decoder)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    return path


def write_coco(
    root: Path, images: list[tuple[str, int, int]], boxes: dict[str, list], classes=("cat",), name: str = "train.json"
) -> Path:
    """A COCO JSON at ``root/name``: ``images`` [(file_name, w, h)], ``boxes`` {file_name: [[x, y, w, h, class]]}."""
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    out_images, annotations = [], []
    for i, (file_name, w, h) in enumerate(images):
        out_images.append({"id": i + 1, "file_name": file_name, "width": w, "height": h})
        for x, y, bw, bh, cls in boxes.get(file_name, []):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": classes.index(cls) + 1,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    path = root / name
    path.write_text(json.dumps({"images": out_images, "annotations": annotations, "categories": categories}))
    return path


def voc_xml(filename: str, objects=(), size=(64, 48)) -> str:
    """A Pascal VOC annotation of ``filename``: ``objects`` are ``(name, (xmin, ymin, xmax, ymax))`` or
    ``(name, box, difficult)``; ``size`` is ``(width, height)``, or None to leave ``<size>`` out."""
    parts = []
    for name, box, *difficult in objects:
        flag = f"<difficult>{difficult[0]}</difficult>" if difficult else ""
        parts.append(
            f"<object><name>{name}</name>{flag}<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
        )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    return f"<annotation><filename>{filename}</filename>{size_xml}{''.join(parts)}</annotation>"


TINY_MODEL = "ssdlite320_mobilenet_v3_large"


def make_tiny_data(root: Path) -> Path:
    """12 train and 4 val images of 96x96 with two shape classes, in COCO layout."""
    return make_synthetic_dataset(root, num_train=12, num_val=4, image_size=96, classes=("circle", "square"), seed=0)


def tiny_overrides(data_dir: Path, out_dir: Path) -> list[str]:
    """A run of ssdlite at 128 px from random weights: 2 images a batch, 2 batches an epoch."""
    return [
        f"model.name={TINY_MODEL}",
        "model.weights=none",
        "model.min_size=128",
        "model.max_size=128",
        "data.format=coco",
        f"data.root={data_dir}",
        "data.train=train.json",
        "data.val=val.json",
        "train.epochs=1",
        "train.batch_size=2",
        "train.workers=0",
        "train.max_iters_per_epoch=2",
        "train.warmup_iters=1",
        "train.lr=0.01",
        "eval.batch_size=4",
        f"output.dir={out_dir}",
    ]


def tiny_config(data_dir: Path, out_dir: Path, *extra: str):
    """:func:`tiny_overrides` plus ``extra`` as a checked Config."""
    return load_config(None, tiny_overrides(data_dir, out_dir) + list(extra))


def constant_onnx(
    path: Path,
    class_names=("cat", "dog"),
    boxes=((2.0, 2.0, 20.0, 20.0),),
    scores=(0.9,),
    labels=(1,),
    **metadata,
) -> Path:
    """A detect-ft ``.onnx`` model that returns the same detections for every image (boxes xyxy pixels,
    scores, labels 1..K): the edge runtime and ``predict`` run it in milliseconds, with no export.
    ``metadata`` adds to or replaces the ``detect_ft`` document (e.g. ``thresholds=[0.5, 0.2]``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def constant(name: str, value: np.ndarray):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    arrays = {
        "c_boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "c_scores": np.asarray(scores, np.float32),
        "c_labels": np.asarray(labels, np.int64),
    }
    nodes = [constant(name, value) for name, value in arrays.items()]
    # Identity on the image's shape keeps the input used, as a real graph's resize would.
    nodes.append(helper.make_node("Shape", ["image"], ["image_shape"]))
    nodes += [helper.make_node("Identity", [name], [name[2:]]) for name in arrays]
    graph = helper.make_graph(
        nodes,
        "constant_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "height", "width"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [None, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("image_shape", TensorProto.INT64, [3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    document = {
        "format": 1,
        "model_name": "constant",
        "class_names": list(class_names),
        "category_ids": list(range(1, len(class_names) + 1)),
        "input": {"name": "image", "scale": 1 / 255, "layout": "CHW", "color": "RGB", "batch_dim": False},
        "outputs": ["boxes", "scores", "labels"],
        **metadata,
    }
    helper.set_model_props(model, {"detect_ft": json.dumps(document)})
    onnx.save(model, str(path))
    return path


def one_error_line(err: str) -> str:
    """The CLI's stderr, checked to be exactly one ``error: ...`` line without a traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def load_tool(name: str):
    """The script ``tools/<name>.py`` as a module (tools/ is not a package), registered in ``sys.modules``
    under ``name``: dataclasses look their module up by name."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


CLASSES = ["circle", "square"]
CATEGORY_IDS = [5, 9]  # not 1..K, so tests see the ids mapped back
FAST_MODELS = [
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_efficientnet_lite0",
]


def model_options(name: str, side: int = 128) -> dict:
    """``build_model`` size options that put ``name`` at about ``side`` pixels (ssd300_vgg16 is fixed at 300)."""
    from detect_ft.models import MODELS

    if name == "ssd300_vgg16":
        return {}
    if MODELS[name].fixed_size:
        return {"min_size": side}
    return {"min_size": side, "max_size": side * 5 // 4}


def separated_model(
    name: str, *, side: int = 128, gain: float = 2.0, seed: int = 0, calibration_images: int = 8, **options
) -> torch.nn.Module:
    """A fixed-seed random detector whose class scores are spread apart (see the module docstring), its
    BatchNorm statistics set from ``calibration_images`` random images (each a full eval forward pass: a
    two-stage model on a ResNet-50 pays seconds per image)."""
    import torch

    from detect_ft.models import MODELS, build_model

    torch.manual_seed(seed)
    model = build_model(
        name, len(CLASSES), weights="none", class_names=CLASSES, **{**model_options(name, side), **options}
    )
    calibrate_batchnorm(model, calibration_images)
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
    import torch

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
    import torch

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
    """Synthetic COCO data of :data:`CLASSES` under ``tmp_path/data`` (``size`` is width, height)."""
    return make_synthetic_dataset(
        tmp_path / "data", num_train=num_train, num_val=num_val, image_size=size, classes=CLASSES, format="coco", seed=3
    )


def pseudo_labelled_split(model: torch.nn.Module, root: Path, min_score: float = 0.3, top: int = 5) -> DatasetRecords:
    """Rewrite ``root/val.json`` so its boxes are the model's ``top`` detections above ``min_score``."""
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
