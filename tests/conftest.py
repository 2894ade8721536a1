"""Fixtures shared by several test files: tiny data and files made on the spot, never downloaded."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (exit code, stdout, stderr)`` of ``detect-ft argv`` in this process."""
    from detect_ft.cli.main import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def payload_checkpoint(tmp_path):
    """``(path, marker)``: a .pt file whose unpickling would create ``marker``; it must never exist."""
    import torch

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    # Shaped like a detect-ft checkpoint, so only the pickled object stands between it and loading.
    torch.save(
        {
            "model": Payload(),
            "model_name": "ssdlite320_mobilenet_v3_large",
            "num_classes": 1,
            "class_names": ["x"],
            "epoch": 1,
            "iteration": 1,
            "optimizer": {},
        },
        path,
    )
    assert not marker.exists()
    return path, marker


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


TINY_MODEL = "ssdlite320_mobilenet_v3_large"


def make_tiny_data(root: Path) -> Path:
    """12 train and 4 val images of 96x96 with two shape classes, in COCO layout."""
    from detect_ft.data.synthetic import make_synthetic_dataset

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
    from detect_ft.config.schema import load_config

    return load_config(None, tiny_overrides(data_dir, out_dir) + list(extra))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """12 train and 4 val synthetic 96x96 images with two shape classes, COCO layout (read-only: copy it
    before changing anything)."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def exported_onnx(tmp_path_factory) -> dict:
    """The session's one exported detector: ``ssdlite320_mobilenet_v3_large`` (spread-out random weights)
    through ``detect-ft export --int8``, parity-checked on pseudo-labelled synthetic data.

    Keys: ``model`` (the PyTorch model), ``name``, ``root`` (COCO data), ``val`` (its records),
    ``checkpoint``, ``onnx``, ``int8`` and ``images`` (the data's image folder). Read-only: write elsewhere.
    ``export.int8_max_map_drop=100``: INT8 of this random-init model, calibrated on 2 images, loses far more
    than the default 1 AP point and would be refused (tests/test_export.py tests the gate on its own).
    """
    from test_export_support import exported_model

    return exported_model(tmp_path_factory.mktemp("exported_onnx"), overrides=("export.int8_max_map_drop=100",))


@pytest.fixture
def one_thread():
    """One intra-op torch thread: on a shared 2-core machine two spin-waiting OpenMP threads can be far
    slower than one (see tests/test_train.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    """The script ``tools/<name>.py`` as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
