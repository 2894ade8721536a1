"""The training path's logic on a stub detector of four parameters (no data files, no real model): the
real ``fit`` -> ``train_one_epoch`` -> ``run_step`` with the real hooks, each run a few milliseconds.

The stub and its helpers (``StubDetector``, ``batches``, ``stub_run``, ``Scripted``) live here for now;
they are candidates for the shared test helpers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import torch.nn as nn
from timm.utils.model_ema import ModelEmaV3

from detect_ft.cli.common import command_logging
from detect_ft.engine.budget import VALIDATION_OVERHEAD_S, Costs, RunLength, TimeBudget, measure_costs
from detect_ft.engine.determinism import DeterminismSettings, set_determinism
from detect_ft.engine.fit import WeightsDiverged, fit, train_one_epoch
from detect_ft.engine.hooks import Hook, default_hooks
from detect_ft.engine.logs import console_messages
from detect_ft.engine.optim import LRSchedule, build_scheduler, schedule_of
from detect_ft.engine.run import Run, TrainOptions
from detect_ft.engine.trainer import EMA_WARMUP_POWER
from detect_ft.utils.errors import DetectFTError

NAN = float("nan")


class StubDetector(nn.Module):
    """A detector of four parameters, ``value(image) = w . mean(image) + b``.

    Train mode: ``model(images, targets)`` -> ``{"loss_fit": mean over the batch of (value - goal)^2}``,
    ``goal`` a scalar tensor in each target (NaN makes the loss NaN). Eval mode: ``model(images)`` -> one
    dict per image with one box, ``boxes`` (1, 4) float xyxy pixels, ``scores`` (1,) = sigmoid(value) and
    ``labels`` (1,) int64 = 1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -0.5, 1.0]))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, images: list[torch.Tensor], targets: Optional[list[dict]] = None) -> Any:
        values = torch.stack([self.w @ image.mean(dim=(1, 2)) for image in images]) + self.b
        if self.training:
            goals = torch.stack([t["goal"] for t in targets])
            return {"loss_fit": ((values - goals) ** 2).mean()}
        box, label = torch.tensor([[1.0, 2.0, 6.0, 7.0]]), torch.ones(1, dtype=torch.int64)
        return [{"boxes": box, "scores": torch.sigmoid(v).reshape(1), "labels": label} for v in values]


def batches(goals: list[list[float]], seed: int = 0) -> list:
    """One ``(images, targets)`` batch per inner list: (3, 4, 4) random images, one target a goal."""
    g = torch.Generator().manual_seed(seed)
    return [
        ([torch.rand(3, 4, 4, generator=g) for _ in batch], [{"goal": torch.tensor(x)} for x in batch])
        for batch in goals
    ]


class Scripted:
    """``run.evaluate`` giving the next of the scripted (map, map50) pairs, and noting which model it scored."""

    def __init__(self, scores: list[tuple[Optional[float], Optional[float]]]) -> None:
        self.scores, self.models = iter(scores), []

    def __call__(self, model: nn.Module) -> dict:
        self.models.append(model)
        m, m50 = next(self.scores)
        return {"map": m, "map50": m50, "map75": 0.0, "seconds": 0.0}


def stub_run(goals: list[list[float]], *, epochs: int = 1, lr: float = 0.1, **fields: Any) -> Run:
    """A run of :class:`StubDetector` over the same ``batches(goals)`` every epoch; ``fields`` set the rest."""
    torch.manual_seed(0)
    model = StubDetector()
    data = batches(goals)
    fields.setdefault("options", TrainOptions(progress=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return Run(model=model, optimizer=optimizer, make_loader=lambda epoch: data, epochs=epochs, **fields)


def built_in_hooks(run_dir: Path, best_metric: str = "map", patience: int = 0) -> list[Hook]:
    return default_hooks(
        run_dir,
        model_name="stub",
        class_names=["a"],
        category_ids=[1],
        config={"train": {"best_metric": best_metric}},
        best_metric=best_metric,
        patience=patience,
    )


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def messages(caplog):
    """The ``detect_ft`` loggers' INFO messages of the test (``caplog.text``)."""
    caplog.set_level(logging.INFO, logger="detect_ft")
    return caplog


# -- fit with the built-in hooks ----------------------------------------------------------------------------


class Points(Hook):
    """Records each hook point it is called at, with ``run.epoch`` and ``run.step`` then."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def before_train(self, run) -> None:
        self.seen.append(("before_train", run.epoch, run.step))

    def before_epoch(self, run) -> None:
        self.seen.append(("before_epoch", run.epoch, run.step))

    def before_step(self, run) -> None:
        self.seen.append(("before_step", run.epoch, run.step))

    def after_step(self, run) -> None:
        self.seen.append(("after_step", run.epoch, run.step))

    def after_epoch(self, run) -> None:
        self.seen.append(("after_epoch", run.epoch, run.step))

    def after_train(self, run) -> None:
        self.seen.append(("after_train", run.epoch, run.step))


def test_hooks_run_in_order_around_epochs_and_steps_after_the_built_in_ones(tmp_path, messages) -> None:
    written: list[int] = []

    class AfterBuiltIns(Hook):
        def after_epoch(self, run) -> None:
            written.append(len(rows(tmp_path)))  # MetricsLogger (built in) ran before this hook

    points = Points()
    run = stub_run([[1.0, 2.0], [3.0, 4.0]], epochs=2, evaluate=Scripted([(0.2, 0.5), (0.3, 0.6)]))
    state = fit(run, [*built_in_hooks(tmp_path), AfterBuiltIns(), points])

    per_epoch = [("before_step", 0), ("after_step", 0), ("before_step", 1), ("after_step", 1)]
    expected = [("before_train", 0, 0)]
    for epoch in (0, 1):
        expected += [("before_epoch", epoch, 1 if epoch else 0)]
        expected += [(name, epoch, step) for name, step in per_epoch] + [("after_epoch", epoch, 1)]
    assert points.seen == [*expected, ("after_train", 1, 1)]
    assert written == [1, 2] and (state.epoch, state.iteration) == (2, 4)
    assert [r["epoch"] for r in rows(tmp_path)] == [1, 2] and rows(tmp_path)[1]["map"] == 0.3
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert (last["epoch"], last["iteration"], last["metrics"]["map"]) == (2, 4, 0.3)
    assert torch.equal(last["model"]["w"], run.model.w) and last["ema"] is None
    assert "epoch 2/2: loss " in messages.text and "| best map 0.3000 @ epoch 2" in messages.text
    assert "training finished: stub, 2 epoch rows" in messages.text


def test_best_checkpoint_and_early_stopping_follow_the_chosen_metric(tmp_path, messages) -> None:
    scores = Scripted([(0.1, 0.5), (0.3, 0.4), (0.2, 0.45), (0.9, 0.9)])
    run = stub_run([[1.0]], epochs=4, evaluate=scores, best_metric="map50")
    fit(run, built_in_hooks(tmp_path, best_metric="map50", patience=2))

    assert [r["map50"] for r in rows(tmp_path)] == [0.5, 0.4, 0.45]  # stopped after 2 validations without gain
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 1 and last["epoch"] == 3 and last["trainer"]["stale"] == 2
    assert best["trainer"] == {"best_value": 0.5, "best_epoch": 1, "stale": 0, "nonfinite_run": 0}
    assert "stopped early: map50 did not improve for 2 validations (train.patience=2)" in messages.text


def test_a_validation_without_countable_boxes_trains_and_says_so(tmp_path, messages) -> None:
    run = stub_run([[1.0]], evaluate=Scripted([(None, None)]))
    fit(run, built_in_hooks(tmp_path))
    row = rows(tmp_path)[0]
    assert row["map"] is None and "no boxes to score" in row["note"]
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and not (tmp_path / "checkpoints" / "best.pt").exists()
    assert "val: no boxes to score" in messages.text and "best.pt not written" in messages.text


def test_a_run_without_validation_says_which_checkpoint_to_use(tmp_path, messages) -> None:
    fit(stub_run([[1.0]], eval_interval=0), built_in_hooks(tmp_path))
    assert not (tmp_path / "checkpoints" / "best.pt").exists() and (tmp_path / "checkpoints" / "last.pt").is_file()
    assert "best.pt not written; last.pt holds the final weights, without per-class" in messages.text


class Poison(Hook):
    """Leaves a nan in the first weight before epoch ``epoch``, as a diverging step would; notes the error."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch, self.error = epoch, None

    def before_epoch(self, run) -> None:
        if run.epoch == self.epoch:
            with torch.no_grad():
                run.model.w[0] = NAN

    def after_train(self, run) -> None:
        self.error = run.error


def test_nonfinite_weights_are_never_saved_and_metrics_stay_strict_json(tmp_path) -> None:
    poison = Poison()
    run = stub_run([[1.0], [2.0]], evaluate=Scripted([(0.5, 0.5)]))
    with pytest.raises(DetectFTError, match="non-finite.*epoch 1/1.*no checkpoint was written .it was the first epoch"):
        fit(run, [*built_in_hooks(tmp_path), poison])
    assert isinstance(poison.error, WeightsDiverged)
    assert not (tmp_path / "checkpoints" / "best.pt").exists() and not (tmp_path / "checkpoints" / "last.pt").exists()
    text = (tmp_path / "metrics.jsonl").read_text()
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
    assert row["epoch"] == 1 and row["loss"] is None and row["skipped_steps"] == 2


def test_weights_diverging_after_a_saved_epoch_name_the_checkpoint_that_keeps_it(tmp_path) -> None:
    run = stub_run([[1.0]], epochs=2, eval_interval=0)
    with pytest.raises(DetectFTError, match=r"epoch 2/2.*checkpoints/last.pt keeps epoch 1, the last finite one"):
        fit(run, [*built_in_hooks(tmp_path), Poison(epoch=1)])
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_the_ema_warms_up_over_the_runs_steps_and_is_what_validation_scores_and_best_pt_holds(tmp_path) -> None:
    decay = 0.9
    weights: list[torch.Tensor] = []

    class Weights(Hook):
        def after_step(self, run) -> None:
            weights.append(run.model.w.detach().clone())

    scores = Scripted([(0.1, 0.1), (0.2, 0.2)])
    run = stub_run([[1.0], [2.0]], epochs=2, evaluate=scores)
    run.ema = ModelEmaV3(run.model, decay=decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
    fit(run, [*built_in_hooks(tmp_path), Weights()])

    average = weights[0]  # step 1 copies the weights (decay 0); then 1 - step^-0.75, at most `decay`
    for step, w in enumerate(weights[1:], start=2):
        d = min(decay, 1 - step**-EMA_WARMUP_POWER)
        average = d * average + (1 - d) * w
    torch.testing.assert_close(run.ema.module.w, average)
    assert not torch.equal(run.ema.module.w, run.model.w) and len(weights) == 4  # across the epoch boundary
    assert scores.models == [run.ema.module, run.ema.module]
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert torch.equal(best["model"]["w"], run.ema.module.w)
    assert torch.equal(best["ema"]["training_model"]["w"], run.model.w)
    assert best["ema"]["decay"] == decay and best["ema"]["warmup_power"] == EMA_WARMUP_POWER


# -- one epoch: accumulation, clipping, the scaler, non-finite losses -----------------------------------------


def test_accumulation_equals_the_larger_batch() -> None:
    small = batches([[1.0, 2.0], [3.0, 4.0]])
    big = [([*small[0][0], *small[1][0]], [*small[0][1], *small[1][1]])]
    results = []
    for loader, accumulate in ((small, 2), (big, 1)):
        run = stub_run([], options=TrainOptions(accumulate=accumulate, progress=False))
        assert train_one_epoch(run, loader)["steps"] == 1 and run.state.iteration == 1
        results.append(run.model.w.detach())
    torch.testing.assert_close(results[0], results[1])


def test_gradient_clipping_bounds_the_update() -> None:
    run = stub_run([], lr=1.0, options=TrainOptions(clip_grad_norm=0.01, progress=False))
    start = torch.cat([run.model.w.detach(), run.model.b.detach().reshape(1)])
    train_one_epoch(run, batches([[100.0, 100.0]]))
    end = torch.cat([run.model.w.detach(), run.model.b.detach().reshape(1)])
    assert (end - start).norm() == pytest.approx(0.01, rel=1e-4)


def test_steps_the_grad_scaler_skips_do_not_advance_the_schedule() -> None:
    # fp16 runs start with a scale so large that the first gradients overflow and the scaler skips those
    # steps; the LR schedule must wait for the real ones (and torch must not warn that it ran ahead).
    run = stub_run([], scaler=torch.amp.GradScaler("cpu", init_scale=2.0**127))  # goal 1e4: loss x scale = inf
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda step: 1.0 / (1 + step))
    seen = []

    class Changes(Hook):
        def before_step(self, run) -> None:
            self.before = run.model.w.detach().clone()

        def after_step(self, run) -> None:
            seen.append((not torch.equal(self.before, run.model.w.detach()), run.scheduler.last_epoch))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = train_one_epoch(run, batches([[1e4], [1e4], [1.0], [1.0]]), [Changes()])
    assert seen == [(False, 0), (False, 0), (True, 1), (True, 2)]
    assert stats["steps"] == 2 and run.state.iteration == 2


def test_nonfinite_losses_are_skipped_then_stop_the_run() -> None:
    run = stub_run([], options=TrainOptions(max_nonfinite=2, progress=False))
    stats = train_one_epoch(run, batches([[1.0], [NAN], [2.0]]))
    assert stats["skipped_steps"] == 1 and stats["nonfinite_run"] == 0 and stats["iterations"] == 3
    assert math.isfinite(stats["loss"]) and torch.isfinite(run.model.w).all()
    # The count carries across epochs: one NaN left over from before plus one more reaches the limit.
    run.state.nonfinite_run = 1
    with pytest.raises(DetectFTError, match="not finite.*2 batches in a row.*batch 1; train.max_nonfinite=2"):
        train_one_epoch(run, batches([[NAN], [1.0]]))


# -- a time budget's deadline and the LR schedule -------------------------------------------------------------


class SlowLoader:
    """``batches``, the first after ``first_wait`` seconds (a loader's workers starting), the rest after ``wait``."""

    def __init__(self, data: list, first_wait: float, wait: float) -> None:
        self.data, self.first_wait, self.wait = data, first_wait, wait

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        for i, batch in enumerate(self.data):
            time.sleep(self.first_wait if i == 0 else self.wait)
            yield batch


def _budgeted_epoch(
    first_wait: float, wait: float, seconds_left: float, *, step_seconds: float, steps: int = 8
) -> LRSchedule:
    """One epoch of ``steps`` batches whose deadline is ``seconds_left`` away, the budget's planned pace
    ``step_seconds``; the LR schedule (planned for 40 steps) after it."""
    run = stub_run([])
    run.scheduler = build_scheduler(run.optimizer, scheduler="cosine", total_steps=40, steps_per_epoch=steps)
    costs = Costs(frozen=step_seconds * steps, training=step_seconds * steps, validation=0.0)
    ends_at = time.perf_counter() + seconds_left
    run.budget = TimeBudget(seconds_left, ends_at=ends_at, length=RunLength(), steps_per_epoch=steps, costs=costs)
    train_one_epoch(run, SlowLoader(batches([[1.0]] * steps), first_wait, wait))
    (schedule,) = schedule_of(run.scheduler)
    return schedule


def test_a_slow_first_batch_does_not_cut_a_budgets_schedule() -> None:
    # 40 steps at 0.01 s fit the 5 s left many times over; the first batch's 1 s is start-up, not pace
    # (taken as the pace, it left 4 more steps).
    assert _budgeted_epoch(first_wait=1.0, wait=0.01, seconds_left=5.0, step_seconds=0.01).total_steps == 40


def test_a_pace_too_slow_for_the_deadline_ends_the_schedule_there() -> None:
    schedule = _budgeted_epoch(first_wait=0.05, wait=0.05, seconds_left=0.6, step_seconds=0.01)
    assert 3 <= schedule.total_steps <= 16  # about 12 steps fit 0.6 s at 0.05 s a step, not the planned 40


def test_an_epoch_too_short_to_time_its_pace_fits_the_schedule_at_the_budgets_estimate() -> None:
    # 2 steps an epoch never time MIN_TIMED_STEPS of their own: the budget's 0.5 s a step leaves about 2 more
    # steps in the 1 s left, not the planned 40 (a deadline hit later would leave the LR above 0).
    assert _budgeted_epoch(0.0, 0.0, 1.0, step_seconds=0.001, steps=2).total_steps == 40
    assert _budgeted_epoch(0.0, 0.0, 1.0, step_seconds=0.5, steps=2).total_steps <= 4


class Recorder(Hook):
    """The planned epochs and schedule length when training starts, and the LR after each epoch."""

    def __init__(self) -> None:
        self.planned, self.lrs = [], []

    def before_train(self, run) -> None:
        self.planned.append((run.epochs, schedule_of(run.scheduler)[0].total_steps))

    def after_epoch(self, run) -> None:
        self.lrs.append(run.optimizer.param_groups[0]["lr"])


class SlowScores(Scripted):
    """A validation that takes ``seconds`` and scores a rising map."""

    def __init__(self, seconds: float) -> None:
        super().__init__([(0.1 * i, 0.1 * i) for i in range(1, 1000)])
        self.seconds = seconds

    def __call__(self, model: nn.Module) -> dict:
        time.sleep(self.seconds)
        return {**super().__call__(model), "seconds": self.seconds}


STEPS = 5  # batches an epoch of the budgeted runs, 20 ms each


def budgeted_run(seconds: float, started: float, run: Optional[Run] = None) -> Run:
    """A stub run (or ``run`` again, as a resume restores it) fitted to ``seconds`` from ``started``."""
    if run is None:
        run = stub_run([], evaluate=SlowScores(0.05))
        data = batches([[1.0]] * STEPS)
        run.make_loader = lambda epoch: SlowLoader(data, 0.02, 0.02)
        run.scheduler = build_scheduler(run.optimizer, scheduler="cosine", total_steps=STEPS, steps_per_epoch=STEPS)
    length = RunLength(interval=1)
    run.budget = TimeBudget.for_run(
        run, seconds, started=started, length=length, steps_per_epoch=STEPS, warmup_iters=0, val_images=4
    )
    return run


def test_a_budget_ends_in_time_with_the_schedule_at_its_end(tmp_path) -> None:
    recorder, started = Recorder(), time.perf_counter()
    run = budgeted_run(3.0, started)
    fit(run, [*built_in_hooks(tmp_path), recorder])
    elapsed = time.perf_counter() - started
    assert 2.0 <= elapsed <= 3.0 + 1.0, elapsed  # most of the budget used; 1 s: the summary, a loaded machine
    assert run.state.epoch >= 3 and [r["epoch"] for r in rows(tmp_path)] == list(range(1, run.state.epoch + 1))
    assert "map" in rows(tmp_path)[-1]  # the last epoch validated
    assert recorder.lrs[-1] == pytest.approx(0.0, abs=1e-12)  # cosine reached its end value
    assert run.state.budget["epochs"] == run.state.epoch == run.epochs


class Interrupt(Hook):
    def after_epoch(self, run) -> None:
        if run.state.epoch == 1:
            raise KeyboardInterrupt


def test_a_resumed_budget_run_continues_its_saved_plan(tmp_path) -> None:
    first = Recorder()
    run = budgeted_run(3.0, time.perf_counter())
    with pytest.raises(KeyboardInterrupt):
        fit(run, [*built_in_hooks(tmp_path), first, Interrupt()])
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["trainer"]["budget"]
    assert saved["epochs"] >= 2 and 0 < saved["used"] < 3.0 and saved == run.state.budget
    run.error = None
    second = Recorder()
    budgeted_run(3.0, time.perf_counter(), run)  # the same objects, as a resume restores them
    fit(run, [*built_in_hooks(tmp_path), second])
    assert second.planned[0] == (saved["epochs"], saved["epochs"] * saved["steps_per_epoch"])
    assert second.lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert [r["epoch"] for r in rows(tmp_path)] == list(range(1, run.state.epoch + 1))


# -- messages and process-wide settings ---------------------------------------------------------------------


def test_messages_show_on_stdout_only_when_the_caller_configured_no_logging(monkeypatch, capsys) -> None:
    package, root = logging.getLogger("detect_ft"), logging.getLogger()
    log = logging.getLogger("detect_ft.engine.trainer")
    monkeypatch.setattr(root, "handlers", [])  # as in a plain script (pytest gives the root logger handlers)
    with console_messages():
        log.info("epoch 1/1: shown")
    with console_messages(is_main=False):  # a DDP rank other than 0
        log.info("not shown")
        log.warning("a warning shows")
    assert capsys.readouterr().out == "epoch 1/1: shown\n"
    assert not package.handlers and package.level == logging.NOTSET  # nothing stays configured
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])  # the caller configured logging
    with console_messages():
        log.info("to the caller's handlers only")
    assert capsys.readouterr().out == "" and not package.handlers


def test_the_command_line_logs_to_stdout_once_also_when_commands_nest(capsys) -> None:
    log = logging.getLogger("detect_ft.engine.hooks")
    with command_logging():
        with command_logging():  # the demo runs its steps as commands inside its own
            log.info("training finished")
    log.info("after the command")
    assert capsys.readouterr().out == "training finished\n"
    assert not logging.getLogger("detect_ft").handlers


def test_determinism_settings_are_put_back(monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = DeterminismSettings.current()
    try:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
        torch.use_deterministic_algorithms(True, warn_only=True)
        saved = DeterminismSettings.current()
        set_determinism(True, torch.device("cpu"))
        assert torch.backends.cudnn.deterministic and os.environ["CUBLAS_WORKSPACE_CONFIG"]
        saved.restore()
        assert torch.backends.cudnn.deterministic is False and torch.backends.cudnn.benchmark is True
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    finally:
        before.restore()


class SlowFirstInference(StubDetector):
    """A stub whose first eval-mode call takes ``first_call_s`` (a GPU loading its kernels), later ones none."""

    def __init__(self, first_call_s: float) -> None:
        super().__init__()
        self.first_call_s = first_call_s

    def forward(self, images: list[torch.Tensor], targets: Optional[list[dict]] = None) -> Any:
        if not self.training and self.first_call_s:
            time.sleep(self.first_call_s)
            self.first_call_s = 0.0
        return super().forward(images, targets)


def test_the_validation_estimate_leaves_out_the_first_inference_calls_start_up():
    run = stub_run([[0.5, 0.5]])
    run.model = SlowFirstInference(first_call_s=0.5)
    costs = measure_costs(run, val_images=200, freezes=False)
    # Timing the slow first call would estimate 200 images x 0.25 s = 50 s.
    assert costs.validation < VALIDATION_OVERHEAD_S + 5, costs
