"""tools/transfer_study.py offline: pretrain on some synthetic shapes, transfer to other shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_tool

from detect_ft.config.schema import load_config
from detect_ft.data.synthetic import make_synthetic_dataset

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo_shapes.yaml"


@pytest.mark.slow
def test_transfer_study_from_a_checkpoint_on_other_classes(trained_run, tmp_path):
    # The source: the session's trained run (the demo config's model, on circles and squares).
    common = ["model.min_size=96", "train.batch_size=4", "train.workers=0", "train.epochs=1", "eval.batch_size=4"]
    source = trained_run / "checkpoints" / "last.pt"
    assert load_config(trained_run / "config.yaml").model.name == load_config(DEMO).model.name

    target_data = make_synthetic_dataset(
        tmp_path / "b", num_train=4, num_val=2, image_size=96, classes=("star", "square"), seed=1
    )
    out = tmp_path / "study"
    tool = load_tool("transfer_study")
    study_args = [
        str(DEMO),
        f"data.root={target_data}",
        "data.classes=[star,square]",
        *common,
        "train.epochs=2",
        "--source",
        str(source),
        "--out",
        str(out),
        "--arms",
        "scratch",
        "frozen",
        "gradual",
    ]
    code = tool.main(study_args)
    assert code == 0
    table = (out / "study.md").read_text()
    for arm in ("scratch", "frozen", "gradual"):
        assert f"| {arm} |" in table
    study = json.loads((out / "study.json").read_text())
    assert set(study["arms"]) == {"scratch", "frozen", "gradual"}
    assert all(len(arm["map_per_epoch"]) == 2 for arm in study["arms"].values())
    assert (out / "map_per_epoch.png").stat().st_size > 0
    frozen_cfg = load_config(out / "frozen" / "config.yaml")
    assert frozen_cfg.model.weights == str(source) and frozen_cfg.model.trainable_backbone_layers == 0
    assert load_config(out / "gradual" / "config.yaml").train.freeze_backbone_epochs == 1
    assert load_config(out / "scratch" / "config.yaml").model.weights == "none"
    # A second call with --reuse trains nothing and rebuilds the same table from the finished arms.
    before = {arm: (out / arm / "metrics.jsonl").stat().st_mtime_ns for arm in ("scratch", "frozen", "gradual")}
    assert tool.main([*study_args, "--reuse"]) == 0
    assert {arm: (out / arm / "metrics.jsonl").stat().st_mtime_ns for arm in before} == before
    assert json.loads((out / "study.json").read_text())["arms"].keys() == study["arms"].keys()


def test_summary_counts_epochs_to_ninety_percent_of_the_best_arm():
    tool = load_tool("transfer_study")
    rows = lambda maps: [{"epoch": i + 1, "map": m, "map50": m} for i, m in enumerate(maps)]
    table = tool.summarise(
        {
            "scratch": {"rows": rows([0.0, 0.1, 0.5]), "wall_s": 3.0},
            "finetune": {"rows": rows([0.5, 0.95, 1.0]), "wall_s": 3.0},
        }
    )
    assert table["finetune"]["epochs_to_90pct"] == 2 and table["finetune"]["best_map"] == 1.0
    assert table["scratch"]["epochs_to_90pct"] is None
    assert table["finetune"]["epochs_to_scratch_final_map50"] == 1 and table["scratch"]["final_map50"] == 0.5
