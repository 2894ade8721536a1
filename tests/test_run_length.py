"""Defaults that scale with the run: warm-up and validation interval, and the warning for a model whose
predictions do not depend on the image (the symptom of a run that never left warm-up)."""

from __future__ import annotations

import numpy as np

from detect_ft.config.schema import load_config
from detect_ft.engine.logs import format_summary
from detect_ft.engine.optim import lr_factor, resolve_warmup_iters
from detect_ft.engine.trainer import eval_interval
from detect_ft.evaluation.prediction_checks import predictions_ignore_image


def test_auto_warmup_is_a_small_share_of_short_and_long_runs():
    assert load_config(None, []).train.warmup_iters is None
    short, note = resolve_warmup_iters(None, 70)  # 3-4 CPU epochs of a small dataset
    assert note is None and 1 <= short <= 0.05 * 70 + 1
    factor = lr_factor("cosine", total_steps=70, steps_per_epoch=20, warmup_iters=short)
    assert factor(short) > 0.99 and factor(35) > 0.4  # the LR has left warm-up well before mid-run
    long, _ = resolve_warmup_iters(None, 90_000)
    assert long == 1000


def test_explicit_warmup_longer_than_the_run_is_shortened_and_said():
    steps, note = resolve_warmup_iters(100, 70)
    assert steps <= 0.25 * 70 and "train.warmup_iters=100" in note
    assert resolve_warmup_iters(10, 70) == (10, None)
    assert resolve_warmup_iters(0, 70) == (0, None)


def test_eval_interval_scales_with_epochs():
    assert eval_interval(None, 4) == 1
    assert eval_interval(None, 100) == 10
    assert eval_interval(3, 100) == 3 and eval_interval(0, 100) == 0


def _pred(scores):
    scores = np.asarray(scores, np.float32)
    return {"boxes": np.zeros((len(scores), 4), np.float32), "scores": scores, "labels": np.ones(len(scores), np.int64)}


def test_constant_predictions_are_detected():
    same = [_pred([0.51, 0.50, 0.49]) for _ in range(4)]
    assert predictions_ignore_image(same)
    varied = [_pred([0.51, 0.50]), _pred([0.9, 0.2]), _pred([0.51, 0.50])]
    assert not predictions_ignore_image(varied)
    assert not predictions_ignore_image([_pred([]), _pred([])])  # nothing detected is another problem
    assert not predictions_ignore_image([_pred([0.5])])  # one image proves nothing


def test_summary_warns_about_constant_predictions(tmp_path):
    common = dict(
        run_dir=tmp_path,
        model_name="m",
        rows=[],
        best={"value": 0.1, "epoch": 1},
        best_metric="map",
        stopped=None,
        seconds=1.0,
        files=[],
    )
    assert "same detections" in format_summary(**common, constant_predictions=True)
    assert "same detections" not in format_summary(**common)
