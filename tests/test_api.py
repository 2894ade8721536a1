"""``detect_ft.Detector``: one interface over checkpoints and ONNX models, with the same Results from
both, validated thresholds as the default confidence, predictions written as datasets, and the README's
Python snippet run as written."""

from __future__ import annotations

import json
import re
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import CATEGORY_IDS, CLASSES

import detect_ft
from detect_ft import Detector
from detect_ft.api.options import dotted_overrides, resolve_config
from detect_ft.cli.main import main
from detect_ft.config import Config
from detect_ft.data.load import load_split
from detect_ft.export import compare_detections
from detect_ft.utils.errors import ConfigError, DetectFTError

ROOT = Path(__file__).resolve().parents[1]


def _images(exported_onnx, n=4):
    return sorted(exported_onnx["images"].glob("*.*"))[:n]


def test_torch_and_onnx_give_the_same_results(exported_onnx):
    torch_detector = Detector.load(exported_onnx["checkpoint"], device="cpu")
    onnx_detector = Detector.load(exported_onnx["onnx"])
    assert torch_detector.model is not None and onnx_detector.model is None
    assert torch_detector.class_names == onnx_detector.class_names == list(CLASSES)
    images = _images(exported_onnx)
    torch_results, onnx_results = torch_detector.predict(images, conf=0.2), onnx_detector.predict(images, conf=0.2)
    assert len(torch_results) == len(onnx_results) == len(images)
    assert sum(len(r) for r in torch_results) > 0
    for a, b in zip(torch_results, onnx_results):
        assert (a.path, a.height, a.width, a.conf) == (b.path, b.height, b.width, b.conf)
        agreement = compare_detections([a.detections()], [b.detections()])
        assert agreement["matched"] == agreement["reference_detections"] == agreement["candidate_detections"]
        assert sorted(a.names) == sorted(b.names)


def test_validated_thresholds_are_the_default_confidence(exported_onnx, tmp_path, capsys):
    torch_detector = Detector.load(exported_onnx["checkpoint"], device="cpu")
    onnx_detector = Detector.load(exported_onnx["onnx"])
    assert torch_detector.thresholds is not None and onnx_detector.thresholds == torch_detector.thresholds
    conf, note = onnx_detector.confidence()
    assert conf == onnx_detector.thresholds and "F1-optimal" in note
    assert onnx_detector.confidence(0.7) == (0.7, "confidence 0.7 (given)")
    for result in onnx_detector.predict(exported_onnx["images"]):
        assert all(s >= onnx_detector.thresholds[k - 1] for s, k in zip(result.scores, result.labels))
    assert main(["predict", str(exported_onnx["onnx"]), str(_images(exported_onnx)[0]), "--output", str(tmp_path)]) == 0
    assert "per-class F1-optimal confidence from validation" in capsys.readouterr().out
    blank = Detector(predict_batch=lambda images: [], model_name="m", class_names=["a"])
    assert blank.confidence() == (0.3, "confidence 0.3 (the default: this model stores no validated thresholds)")


def test_class_filter_and_in_memory_images(exported_onnx):
    detector = Detector.load(exported_onnx["onnx"])
    kept = detector.predict(exported_onnx["images"], conf=0.05, classes=[CLASSES[1]])
    assert all(set(r.names) <= {CLASSES[1]} for r in kept)
    with pytest.raises(ConfigError, match="not classes of this model"):
        detector.predict(exported_onnx["images"], classes=["zebra"])
    [result] = detector.predict(np.zeros((48, 64, 3), np.uint8), conf=0.0)
    assert result.path is None and (result.height, result.width) == (48, 64) and result.plot().shape == (48, 64, 3)
    with pytest.raises(DetectFTError, match="ONNX model"):
        detector.train()


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_predict_save_format_round_trips_through_the_adapters(exported_onnx, tmp_path, fmt, capsys):
    out = tmp_path / fmt
    argv = [
        "predict",
        str(exported_onnx["onnx"]),
        str(exported_onnx["images"]),
        "--output",
        str(out),
        "--conf",
        "0.2",
        "--save-format",
        fmt,
    ]
    assert main(argv) == 0
    rows = json.loads((out / "predictions.json").read_text())
    # the settings the command prints to train on the dataset it wrote
    settings = dict(re.findall(r"data\.(\w+)=(\S+)", capsys.readouterr().out))
    assert settings == {"format": fmt, "root": str(out / "dataset"), "train": settings["train"]}
    records, _ = load_split(format=fmt, root=settings["root"], split=settings["train"])
    assert records.class_names == list(CLASSES) and len(records) == len(list(exported_onnx["images"].iterdir()))
    for record in records.records:
        mine = [r for r in rows if r["file_name"] == Path(record.file_name).name]
        expected = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]).reshape(-1, 4)
        if fmt == "voc":  # VOC stores integer corners
            expected = np.round(expected)
        order = lambda boxes: boxes[np.lexsort(np.round(boxes, 2).T[::-1])]  # noqa: E731  (YOLO's floats differ by 1e-6)
        np.testing.assert_allclose(order(record.boxes), order(expected), atol=1e-3)
        labels = sorted(CATEGORY_IDS.index(r["category_id"]) + 1 for r in mine)
        assert sorted(record.labels.tolist()) == labels
    assert (out / "dataset" / "images" if fmt == "coco" else out / "dataset").exists()


def test_eval_writes_thresholds_and_their_curves(exported_onnx, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": {"format": "coco", "root": str(exported_onnx["root"]), "train": "train.json", "val": "val.json"}}
        )
    )
    assert main(["eval", str(config), "--weights", str(exported_onnx["onnx"]), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "F1 conf" in out and "best F1 @.50" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["thresholds"]) == set(CLASSES) and 0 < metrics["overall_f1"] <= 1
    curves = json.loads((tmp_path / "thresholds.json").read_text())
    assert len(curves["conf"]) == len(curves["overall"]["f1"]) == 101 and set(curves["per_class"]) == set(CLASSES)
    for name in ("f1_curve.png", "precision_curve.png", "recall_curve.png", "pr_curves.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_thresholds_must_be_one_confidence_per_class():
    def nothing(images):
        return []

    for bad in ([0.5], [0.5, 1.5], [0.5, True], ["0.5", 0.5]):
        with pytest.raises(DetectFTError, match="one confidence in \\[0, 1\\] per class \\(2\\)"):
            Detector(predict_batch=nothing, model_name="m", class_names=["a", "b"], thresholds=bad, source="m.pt")
    detector = Detector(predict_batch=nothing, model_name="m", class_names=["a", "b"], thresholds=(0, np.float32(1)))
    assert detector.thresholds == [0.0, 1.0]


def test_overrides_by_short_or_dotted_name():
    assert dotted_overrides({"epochs": 5, "eval.batch_size": 2}) == {"train.epochs": 5, "eval.batch_size": 2}
    with pytest.raises(ConfigError, match="train.batch_size, eval.batch_size"):
        dotted_overrides({"batch_size": 4})
    with pytest.raises(ConfigError, match="no config section has it"):
        dotted_overrides({"epohcs": 4})


def test_a_config_object_leaves_its_default_keys_to_the_models_recipe():
    assert resolve_config(Config(), {}).model.weights == "imagenet"  # the default model's recipe
    assert (
        resolve_config(Config(), {}).train.lr == 0.002 and resolve_config(Config(), {"train.lr": 0.01}).train.lr == 0.01
    )
    chosen = Config()
    chosen.model.weights, chosen.train.lr = "none", 0.5
    resolved = resolve_config(chosen, {"train.epochs": 3})
    assert (resolved.model.weights, resolved.train.lr, resolved.train.epochs) == ("none", 0.5, 3)
    recipe_free = Config()
    recipe_free.model.name = "ssdlite320_mobilenet_v3_large"  # no recipe: the dataclass default (COCO) stays
    assert resolve_config(recipe_free, {}).model.weights == "coco"


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def _raccoon_subset(root: Path, train: int, val: int) -> Path:
    """The first ``train`` and ``val`` photos of the in-repo raccoon set, as a VOC folder under ``root``."""
    raccoon = ROOT / "datasets" / "raccoon-small"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, count in (("train", train), ("val", val)):
        names = sorted((raccoon / "ImageSets" / "Main" / f"{split}.txt").read_text().split())[:count]
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".xml")):
                (root / folder).mkdir(exist_ok=True)
                shutil.copy(raccoon / folder / f"{name}{suffix}", root / folder)
    return root


@pytest.mark.slow
def test_readme_python_snippet_runs_as_written(tmp_path, monkeypatch):
    """The README's train / predict / plot / export / load snippet, on raccoon photos that ship in the repo
    (a subset, one step per epoch and one validation, so that it runs in well under a minute)."""
    raccoon = _raccoon_subset(tmp_path / "raccoon", train=16, val=8)
    (tmp_path / "my.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {"format": "voc", "root": str(raccoon), "train": "train", "val": "val"},
                "train": {"max_iters_per_epoch": 1, "batch_size": 4, "workers": 0, "eval_interval": 5},
                "eval": {"plots": False},
                "output": {"dir": str(tmp_path / "runs" / "raccoon")},
            }
        )
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((raccoon / "JPEGImages").iterdir())[:3]:
        shutil.copy(image, photos)
    (tmp_path / "snippet.py").write_text(_readme_snippet())
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "snippet.py"), run_name="__main__")  # the snippet itself, nothing added
    assert (tmp_path / "annotated.jpg").stat().st_size > 0 and (tmp_path / "raccoon.onnx").exists()
    assert len(list((tmp_path / "runs" / "raccoon" / "checkpoints").glob("*.pt"))) == 2


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_create_then_train_keeps_the_created_model(tiny_data, tmp_path):
    """Detector.create's classes, weights and model options reach training, and so do the caller's hooks;
    the detector then holds the run's best checkpoint."""
    from helpers import TINY_MODEL, tiny_config

    from detect_ft.config.schema import load_config
    from detect_ft.engine.hooks import Hook

    class Losses(Hook):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def after_epoch(self, run) -> None:
            self.losses.append(run.row["loss"])

    detector = Detector.create(
        TINY_MODEL, classes=["circle", "square"], weights="none", detections_per_img=50, device="cpu"
    )
    hook = Losses()
    run = detector.train(tiny_config(tiny_data, tmp_path / "run"), progress=False, hooks=[hook], epochs=1)
    assert len(hook.losses) == 1 and hook.losses[0] > 0
    saved = load_config(run.run_dir / "config.yaml")
    assert (saved.model.detections_per_img, saved.model.weights, saved.data.classes) == (
        50,
        "none",
        ["circle", "square"],
    )
    assert detector.source == str(run.best_checkpoint) and detector.model is not None
    assert run.metrics.get("epoch") == 1
    with pytest.raises(ConfigError, match="differ from this detector's classes"):
        detector.train(tiny_config(tiny_data, tmp_path / "other", "data.classes=[square]"), progress=False)


@pytest.fixture(scope="module")
def small_detector():
    from helpers import TINY_MODEL

    return Detector.create(TINY_MODEL, classes=["cat"], weights="none", device="cpu", min_size=64)


API_MISTAKES = {
    "load(123)": (lambda d: Detector.load(123), r"Detector.load: path must be a detect-ft checkpoint.*got int 123"),
    "predict(123)": (lambda d: d.predict(123), r"source must be an image/folder/glob/video path.*got int 123"),
    "predict([array, 5])": (
        lambda d: d.predict([np.zeros((8, 8, 3), np.uint8), 5]),
        r"source item 1 must be an image path or an RGB uint8 array",
    ),
    "create(weights=5)": (
        lambda d: Detector.create(d.model_name, classes=["cat"], weights=5),
        r"Detector.create: weights must be coco, imagenet, none or the path.*got int 5",
    ),
    "predict(conf='high')": (
        lambda d: d.predict(np.zeros((8, 8, 3), np.uint8), conf="high"),
        r"predict: conf must be a number in \[0, 1\].*got str 'high'",
    ),
    "create(bogus_option=3)": (
        lambda d: Detector.create(d.model_name, classes=["cat"], weights="none", bogus_option=3),
        r"Detector.create: unknown option bogus_option=3; the model options are backbone, .*min_size",
    ),
    "create(min_size='big')": (
        lambda d: Detector.create(d.model_name, classes=["cat"], weights="none", min_size="big"),
        r"Detector.create: option min_size: .*an integer",
    ),
    "create(classes=None)": (
        lambda d: Detector.create(d.model_name, classes=None, weights="none"),
        r"Detector.create: classes must be a list of class names",
    ),
}


@pytest.mark.parametrize("call", list(API_MISTAKES))
def test_api_arguments_of_a_wrong_type_are_one_line_type_errors(small_detector, call):
    from detect_ft.utils.errors import ArgumentTypeError

    function, message = API_MISTAKES[call]
    with pytest.raises(ArgumentTypeError, match=message) as info:
        function(small_detector)
    assert isinstance(info.value, TypeError) and isinstance(info.value, DetectFTError) and "\n" not in str(info.value)


def test_api_argument_values_out_of_range_are_one_line_config_errors(small_detector):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(DetectFTError, match=r"in-memory image of shape \(0, 0, 3\) has no pixels"):
        small_detector.predict(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"predict: conf 2: pass a score threshold in \[0, 1\]"):
        small_detector.predict(image, conf=2)
    with pytest.raises(ConfigError, match=r"Detector.create: device 'gpu' is not one of auto, cpu, cuda or cuda:N"):
        Detector.create(small_detector.model_name, classes=["cat"], weights="none", device="gpu")
    with pytest.raises(ConfigError, match=r"Detector.create: config key 'model.min_size': got 8"):
        Detector.create(small_detector.model_name, classes=["cat"], weights="none", min_size=8)


def test_create_takes_one_class_as_a_string_and_refuses_repeated_names(small_detector):
    name = small_detector.model_name
    assert Detector.create(name, classes="raccoon", weights="none", device="cpu").class_names == ["raccoon"]
    with pytest.raises(ConfigError, match=r"Detector.create: classes \['a', 'a'\] repeat a; name each class once"):
        Detector.create(name, classes=["a", "a"], weights="none")
    with pytest.raises(ConfigError, match="named like the background"):
        Detector.create(name, classes=["cat", "Background"], weights="none")
    assert small_detector.predict(np.zeros((8, 8, 3), np.uint8), conf=0.0, classes="cat")[0].class_names == ["cat"]


def test_create_starts_from_the_models_own_pretrained_weights_unless_told():
    # the EfficientNet-Lite models have no COCO weights: their default start is ImageNet (installed offline)
    assert Detector.create("ssdlite320_efficientnet_lite0", classes=["a"], device="cpu").weights == "imagenet"
    assert detect_ft.build_model("ssdlite320_efficientnet_lite0", 1) is not None  # the same default
    with pytest.raises(ConfigError, match="has no COCO weights"):
        Detector.create("ssdlite320_efficientnet_lite0", classes=["a"], weights="coco")
    with pytest.raises(ConfigError, match="model"):
        Detector.create("no_such_model", classes=["a"])
