"""train.time_budget: the plan (direct), the summary's trend line and the collapse check. Budgeted runs
(their length, their LR schedule's end, resume) run on a stub detector in test_fit.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from detect_ft.config.schema import load_config
from detect_ft.data.records import DatasetRecords, ImageRecord
from detect_ft.engine.budget import Costs, RunLength, TimeBudget, plan_epochs, remaining_cost
from detect_ft.engine.logs import validation_trend
from detect_ft.evaluation.prediction_checks import boxes_ignore_image
from detect_ft.utils.errors import ConfigError


def test_durations_parse_and_nonsense_is_one_line():
    assert load_config(None, ["train.time_budget=1.5h"]).train.time_budget == "1.5h"
    for bad in ("ten", "-5m", "0s", "5 days"):
        with pytest.raises(ConfigError, match="train.time_budget"):
            load_config(None, [f"train.time_budget={bad}"])
    with pytest.raises(ConfigError, match="freeze_backbone_fraction"):
        load_config(None, ["train.freeze_backbone_fraction=1"])


def test_epochs_given_on_top_of_a_files_budget_replace_it(tmp_path):
    config = tmp_path / "budget.yaml"
    config.write_text("train: {time_budget: 5m}\n")
    assert load_config(config).train.time_budget == "5m"
    assert load_config(config, ["train.epochs=3"]).train.time_budget == ""
    assert load_config(config, ["train.epochs=3", "train.time_budget=1m"]).train.time_budget == "1m"


def test_validations_counts_the_interval_and_the_last_epoch():
    every_epoch = RunLength(interval=1)
    assert every_epoch.validations(0, 5) == 5 and every_epoch.validations(3, 5) == 2
    auto = RunLength()  # about ten a run: every 2nd of 15 epochs, and the 15th
    assert auto.validations(0, 15) == len([e for e in range(15) if (e + 1) % 2 == 0 or e == 14])
    assert RunLength(validates=False).validations(0, 15) == 0 and RunLength(interval=0).validations(0, 9) == 0


def test_a_steps_planned_seconds_follow_the_epochs_phase():
    costs = Costs(frozen=1.0, training=3.0, validation=5.0)
    budget = TimeBudget(60.0, ends_at=60.0, length=RunLength(), steps_per_epoch=4, costs=costs)
    assert budget.step_seconds(SimpleNamespace(frozen=True)) == 0.25
    assert budget.step_seconds(SimpleNamespace(frozen=False)) == 0.75


def test_the_plan_fits_frozen_and_training_epochs_and_validations():
    costs = Costs(frozen=1.0, training=2.0, validation=3.0)
    length = RunLength(freeze_fraction=0.5, interval=1)
    # 4 epochs: 2 frozen (2 s) + 2 training (4 s) + 4 validations (12 s) = 18 s
    assert remaining_cost(4, trained=0, validated_from=0, costs=costs, length=length) == 18.0
    assert plan_epochs(18.0, trained=0, validated_from=0, costs=costs, length=length) == 4
    assert plan_epochs(17.9, trained=0, validated_from=0, costs=costs, length=length) == 3
    # after 2 epochs trained (epoch 1 not validated yet), 10 s more fit 2 more epochs: 2x2 s + 2 validations
    assert plan_epochs(10.0, trained=2, validated_from=1, costs=costs, length=length) == 3
    # nothing more fits: the run ends with the epoch that trained, never before it, and trains at least one
    assert plan_epochs(0.0, trained=5, validated_from=4, costs=costs, length=length) == 5
    assert plan_epochs(0.0, trained=0, validated_from=0, costs=costs, length=length) == 1


def _rows(values):
    return [{"epoch": i + 1, "map50": v} for i, v in enumerate(values)]


def test_the_trend_line_says_rising_peaked_or_level():
    rising = validation_trend(_rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), "map50", time_budget=600)
    assert "still rising" in rising and "train.time_budget=20m" in rising
    assert "train.epochs=12" in validation_trend(_rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), "map50")
    assert "peaked at epoch 2" in validation_trend(_rows([0.3, 0.6, 0.5, 0.4, 0.35, 0.3]), "map50")
    assert "levelled off" in validation_trend(_rows([0.1, 0.5, 0.6, 0.6, 0.6, 0.601]), "map50")
    assert validation_trend(_rows([0.1, 0.2]), "map50") == ""


def _records(boxes_per_image):
    records = [
        ImageRecord(f"{i}.jpg", 100, 100, boxes=np.array([box], np.float32), labels=np.ones(1, np.int64))
        for i, box in enumerate(boxes_per_image)
    ]
    return DatasetRecords(records=records, class_names=["a"], category_ids=[1], source="test")


def test_a_model_drawing_the_same_boxes_everywhere_is_collapsed_whatever_its_scores():
    truth = _records([[10, 10, 40, 40], [50, 50, 90, 90], [5, 60, 30, 95], [60, 5, 95, 30]])
    same_place = [
        {"boxes": np.array([[1, 1, 99, 99], [2, 0, 98, 97]], np.float32), "scores": np.array([0.445 + i / 1e3, 0.44])}
        for i in range(4)
    ]
    assert boxes_ignore_image(same_place, truth)
    following = [{"boxes": np.asarray(r.boxes), "scores": np.array([0.9])} for r in truth.records]
    assert not boxes_ignore_image(following, truth)
    # objects that never move (the same box in every photo) make the same predictions right, not collapsed
    still = _records([[1, 1, 99, 99]] * 4)
    assert not boxes_ignore_image(same_place, still)
