"""SplitSpec and load_checked_split: the data options of a config, one path to a checked split."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from detect_ft.config.schema import load_config
from detect_ft.data.checks.findings import DEFAULT_POLICIES, POLICY_KEYS
from detect_ft.data.load import load_split
from detect_ft.data.split import SplitSpec, load_checked_split, report_split
from detect_ft.data.synthetic import make_synthetic_dataset
from detect_ft.utils.errors import DataError

CLASSES = ("circle", "square", "triangle")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    return make_synthetic_dataset(root, num_train=6, num_val=0, image_size=64, classes=CLASSES, format="voc")


def test_spec_from_config_carries_the_data_options_and_every_policy():
    overrides = [
        "data.format=voc",
        "data.root=somewhere",
        "data.images=imgs",
        "data.keep_background=false",
        "data.on_box_outside=drop",
        "data.on_exif_orientation=apply",
    ]
    data = load_config(None, overrides).data
    spec = SplitSpec.from_config(data)
    assert (spec.format, spec.root, spec.images, spec.keep_background) == ("voc", "somewhere", "imgs", False)
    assert spec.policies == {key: getattr(data, key) for key in POLICY_KEYS.values()}
    assert spec.policies["on_box_outside"] == "drop" and spec.policies["on_exif_orientation"] == "apply"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.format = "coco"


def test_spec_fills_default_policies_and_refuses_unknown_ones():
    assert SplitSpec("coco").policies == DEFAULT_POLICIES
    given = {"on_small_box": "drop"}
    spec = SplitSpec("coco", policies=given)
    given["on_small_box"] = "error"  # the spec keeps its own copy
    assert spec.policies == {**DEFAULT_POLICIES, "on_small_box": "drop"}
    with pytest.raises(ValueError, match="on_missing_image"):
        SplitSpec("coco", policies={"on_missing_image": "clip"})
    with pytest.raises(ValueError, match="unknown policy key"):
        SplitSpec("coco", policies={"on_typo": "drop"})


def test_load_checked_split_labels_in_the_given_class_order(voc):
    spec = SplitSpec("voc", root=voc)
    own, _ = load_checked_split(spec, "train", None)
    order = ["triangle", "circle", "square"]
    model, report = load_checked_split(spec, "train", order)
    assert own.class_names == sorted(CLASSES) and model.class_names == order and report.errors == []
    assert model.num_boxes == own.num_boxes > 0
    for a, b in zip(own.records, model.records):
        assert [own.class_names[k - 1] for k in a.labels] == [order[k - 1] for k in b.labels]
    # an empty class list means the dataset's own names, as None does
    assert load_checked_split(spec, "train", [])[0].class_names == own.class_names


def test_load_checked_split_applies_the_configs_policies(tmp_path):
    root = make_synthetic_dataset(
        tmp_path / "voc", num_train=4, num_val=0, image_size=64, classes=CLASSES, format="voc"
    )
    first = load_split(format="voc", root=root, split="train")[0].records[0]
    Path(first.image_path).unlink()
    strict = SplitSpec.from_config(load_config(None, ["data.format=voc", f"data.root={root}"]).data)
    with pytest.raises(DataError, match="(?s)missing_image.*data.on_missing_image=drop"):
        load_checked_split(strict, "train", CLASSES)
    records, report = report_split(strict, "train", CLASSES)  # check-data: reported, not raised
    assert [f.kind for f in report.errors] == ["missing_image"] and len(records) == 4
    lenient = dataclasses.replace(strict, policies={**strict.policies, "on_missing_image": "drop"})
    records, report = load_checked_split(lenient, "train", CLASSES, decode=True)
    assert len(records) == 3 and report.findings[0].action == "dropped image"
    assert first.image_path not in [r.image_path for r in records.records]


def test_plots_use_no_pyplot_state(tmp_path, voc):
    """check-data's, training's and eval's plots draw on standalone figures: pyplot is never imported and
    the backend never set (a notebook that trains keeps its own)."""
    script = (
        "import sys, matplotlib\n"
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from detect_ft.data.load import load_split\n"
        "from detect_ft.data.split_plots import write_split_plots\n"
        "from detect_ft.engine.logs import write_training_plots as training_plots\n"
        "from detect_ft.evaluation.plots import write_plots as eval_plots\n"
        f"records, _ = load_split(format='voc', root={str(voc)!r}, split='train')\n"
        "backend = matplotlib.rcParams._get_backend_or_none()\n"
        f"paths = write_split_plots(records, {str(tmp_path)!r}, 'train', samples=4)\n"
        "assert [p.name for p in paths] == ['train_histograms.png', 'train_samples.png'], paths\n"
        "rows = [{'epoch': 1, 'loss': 2.0, 'losses': {'a': 1.0}, 'map': 0.1, 'map50': 0.2, 'map75': None}]\n"
        f"paths = training_plots(rows, Path({str(tmp_path)!r}))\n"
        "assert [p.name for p in paths] == ['loss.png', 'map.png'], paths\n"
        "preds = [{'boxes': r.boxes, 'scores': np.ones(len(r.boxes)), 'labels': r.labels} for r in records.records]\n"
        f"assert len(eval_plots(records, preds, Path({str(tmp_path)!r}) / 'eval')) == 2\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.rcParams._get_backend_or_none() == backend\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "train_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
