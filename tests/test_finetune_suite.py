"""tools/finetune_suite.py on two tiny generated datasets (COCO and VOC layouts), with a few-second budget."""

from __future__ import annotations

import json

import pytest
from helpers import TINY_MODEL, load_tool

from detect_ft.data.synthetic import make_synthetic_dataset


def test_dataset_layouts_are_recognised(tmp_path):
    suite = load_tool("finetune_suite")
    coco = make_synthetic_dataset(tmp_path / "coco", num_train=2, num_val=1, image_size=64, format="coco")
    voc = make_synthetic_dataset(tmp_path / "voc", num_train=2, num_val=1, image_size=64, format="voc")
    assert "data.format=coco" in suite.dataset_overrides(coco)
    assert "data.format=voc" in suite.dataset_overrides(voc)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(suite.DetectFTError, match="not a VOC"):
        suite.dataset_overrides(tmp_path / "nothing")
    assert suite.parse_arm("fast:train.lr=0.1,train.ema=true") == ("fast", ["train.lr=0.1", "train.ema=true"])


def test_minutes_to_reach_the_scratch_arms_ap50():
    suite = load_tool("finetune_suite")
    assert suite.minutes_to_reach([(1.0, 0.2), (2.0, 0.5), (3.0, 0.6)], 0.45) == 2.0
    assert suite.minutes_to_reach([(1.0, 0.2)], 0.45) is None


@pytest.mark.slow
def test_the_suite_tables_two_arms_on_two_datasets_and_reuses_them(tmp_path, capsys):
    suite = load_tool("finetune_suite")
    shapes = dict(num_train=8, num_val=4, image_size=96, classes=("circle", "square"))
    datasets = [
        make_synthetic_dataset(tmp_path / "shapes_coco", format="coco", seed=0, **shapes),
        make_synthetic_dataset(tmp_path / "shapes_voc", format="voc", seed=1, **shapes),
    ]
    out = tmp_path / "suite"
    argv = ["--datasets", *map(str, datasets), "--out", str(out), "--model", TINY_MODEL, "--minutes", "0.03"]
    argv += ["--arm", "scratch:train.lr=0.01", "--arm", "faster:train.lr=0.02"]
    argv += ["model.weights=none", "model.min_size=96", "train.batch_size=4", "train.workers=0", "eval.batch_size=4"]
    assert suite.main(argv) == 0
    table = (out / "suite.md").read_text()
    for dataset in ("shapes_coco", "shapes_voc"):
        for arm in ("scratch", "faster"):
            assert f"| {dataset} | {arm} |" in table
            record = json.loads((out / dataset / arm / "arm.json").read_text())
            assert record["epochs"] >= 1 and record["map50"] is not None and record["minutes"] < 1
    assert (out / "map50_vs_minutes.png").stat().st_size > 0
    assert "Mean AP50 over the datasets" in table
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.jsonl")}
    assert suite.main([*argv, "--reuse"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.jsonl")} == before  # nothing trained again
    assert (out / "suite.md").read_text() == table
