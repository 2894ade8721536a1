"""``detect-ft tune``: trials on tiny data (seconds each), the pruning hook with real Optuna trials, resuming a
study, the search-space checks, and the error without the ``tune`` extra."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from helpers import TINY_MODEL, run_python, tiny_config, tiny_overrides

from detect_ft.api.train import train_config
from detect_ft.config.schema import load_config
from detect_ft.tuning.pruning import PruningHook
from detect_ft.tuning.search_space import Param, baseline, default_space
from detect_ft.tuning.study import TuneOptions, open_study, random_trials, run_study


class PruneTrials(optuna.pruners.BasePruner):
    """Prunes the trials numbered in ``numbers`` at their first report, and no other."""

    def __init__(self, *numbers: int) -> None:
        self.numbers = set(numbers)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number in self.numbers


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"model:\n  name: {TINY_MODEL}\n")
    return path


def read_trials(tune_dir: Path) -> list[dict]:
    with open(tune_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def metric_rows(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_trials_write_the_table_best_config_and_plots_and_a_rerun_runs_only_missing_trials(
    tiny_data, tmp_path, run_cli
):
    config, tune = write_config(tmp_path), tmp_path / "tune"
    argv = ["tune", config, "--time-budget", "3s", "--output", tune, *tiny_overrides(tiny_data, tmp_path / "tiny")]
    code, out, err = run_cli(*argv, "--trials", "2")
    assert code == 0, err
    rows = read_trials(tune)
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "complete (baseline)"), ("1", "complete")]
    assert "| trial | state | map |" in out and "0 of 2 trials done, 2 to run" in out
    own = load_config(config, tiny_overrides(tiny_data, tmp_path / "tiny"))  # trial 0 is the config's own setting
    assert float(rows[0]["train.lr"]) == pytest.approx(own.train.lr) and rows[0]["augment.preset"] == own.augment.preset
    assert float(rows[0]["train.freeze_backbone_fraction"]) == pytest.approx(own.train.freeze_backbone_fraction)
    for row in rows:
        assert float(row["map"]) == max(r["map"] for r in metric_rows(row["run_dir"]))
        assert Path(row["run_dir"]).parent == tune
    best_row = max(rows, key=lambda r: float(r["map"]))
    best = load_config(tune / "best.yaml")  # as detect-ft train loads it
    assert best.train.lr == pytest.approx(float(best_row["train.lr"]))
    assert best.augment.preset == best_row["augment.preset"]
    assert best.train.time_budget == "3s" and best.output.dir == str(tmp_path / "tiny")
    assert (tune / "history.png").stat().st_size > 0
    assert (tune / "importance.png").is_file() or "parameter importance" in out

    code, out, err = run_cli(*argv, "--trials", "3")  # resumes the study in tune/study.db
    assert code == 0, err
    assert "2 of 3 trials done, 1 to run" in out
    rows = read_trials(tune)
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and rows[:2] == read_trials(tune)[:2]
    assert rows[2]["train.lr"] not in (rows[0]["train.lr"], rows[1]["train.lr"])  # the sampler draws anew
    assert sorted(p.name for p in tune.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]

    code, out, err = run_cli(*argv, "--trials", "3")
    assert code == 0 and "3 of 3 trials done, 0 to run" in out
    assert not (tune / "trial-0003").exists()


def test_the_pruning_hook_reports_each_validation_and_stops_the_run(tiny_data, tmp_path):
    study = optuna.create_study(direction="maximize", pruner=PruneTrials(0))
    trial = study.ask()
    hook = PruningHook(trial, "map50")
    result = train_config(tiny_config(tiny_data, tmp_path / "run", "train.epochs=3"), progress=False, hooks=[hook])
    rows = metric_rows(result.run_dir)
    assert hook.pruned and hook.pruned_at == 1
    assert [r["epoch"] for r in rows] == [1]  # stopped after its first of 3 epochs
    assert study.trials[0].intermediate_values == {1: rows[0]["map50"]}
    assert (result.run_dir / "checkpoints" / "last.pt").is_file()


def test_a_pruned_trial_is_recorded_as_pruned(tiny_data, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: float, low: 0.001, high: 0.02, log: true}\n")
    options = TuneOptions(
        write_config(tmp_path),
        overrides=[*tiny_overrides(tiny_data, tmp_path / "tiny"), "train.epochs=2"],
        trials=2,
        time_budget=None,  # each trial trains train.epochs=2, validating after both
        space=space,
        output=tmp_path / "tune",
        pruner=PruneTrials(1),
    )
    report = run_study(options)
    assert [(r["state"], r["epochs"]) for r in report.rows] == [("complete (baseline)", 2), ("pruned", 1)]
    assert [len(metric_rows(r["run_dir"])) for r in report.rows] == [2, 1]
    assert list(report.rows[0]) == ["trial", "state", "map", "epochs", "seconds", "train.lr", "run_dir"]
    assert report.best_config == tmp_path / "tune" / "best.yaml" and report.best_config.is_file()
    assert report.importance == {} and "at least 2 completed trials" in report.importance_note
    assert not (tmp_path / "tune" / "importance.png").exists()


def test_the_default_space_centres_on_the_config(tmp_path):
    cfg = load_config(None, [f"model.name={TINY_MODEL}", "model.min_size=320", "train.lr=0.004"])
    space = {p.key: p for p in default_space(cfg)}
    assert space["train.lr"].log and (space["train.lr"].low, space["train.lr"].high) == pytest.approx((0.0008, 0.02))
    assert space["model.min_size"].choices == (256, 320, 416)
    assert space["train.ema"].choices == (False, True) and "strong" in space["augment.preset"].choices
    with_max = load_config(None, [f"model.name={TINY_MODEL}", "model.min_size=320", "model.max_size=320"])
    assert "model.min_size" not in {p.key for p in default_space(with_max)}  # min_size alone may not fit


@pytest.mark.parametrize(
    "space, says",
    [
        ("train.lrr: {type: float, low: 0.001, high: 0.1}", "did you mean 'train.lr'"),
        ("train.freeze_backbone_fraction: {type: float, low: 0.0, high: 1.0}", "train.freeze_backbone_fraction=1.0"),
        ("train.lr: {type: float, low: 0.1, high: 0.01}", "key train.lr: needs finite low <= high"),
        ("augment.preset: {type: categorical, choices: [light, heavy]}", "augment.preset='heavy'"),
        ("train.time_budget: {type: categorical, choices: [1m, 2m]}", "detect-ft tune sets this key"),
    ],
)
def test_a_bad_space_is_one_error_before_any_trial(tiny_data, tmp_path, run_cli, space, says):
    (tmp_path / "space.yaml").write_text(space + "\n")
    tune = tmp_path / "tune"
    code, out, err = run_cli(
        "tune", write_config(tmp_path), "--space", tmp_path / "space.yaml", "--output", tune,
        *tiny_overrides(tiny_data, tmp_path / "tiny"),
    )  # fmt: skip
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert says in err
    assert not tune.exists()


def test_tune_without_optuna_names_the_extra(tmp_path):
    code = "import sys; sys.modules['optuna'] = None\nfrom detect_ft.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    result = run_python(code, "tune", str(write_config(tmp_path)), "--trials", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: detect-ft tune needs Optuna, which is not installed: pip install 'detect-ft[tune]' "
        "(or pip install optuna)"
    )


def test_the_default_pruner_waits_for_three_trials_and_spares_epoch_one(tmp_path):
    study = open_study(f"sqlite:///{tmp_path / 'study.db'}", "s", seed=0)
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={1: value, 2: value}))
    trial = study.ask()
    trial.report(0.1, step=2)
    assert not trial.should_prune()  # only 2 completed trials
    study.add_trial(optuna.trial.create_trial(value=0.7, intermediate_values={1: 0.7, 2: 0.7}))
    trial = study.ask()
    trial.report(0.1, step=1)
    assert not trial.should_prune()  # epoch 1's validation is too noisy to prune on
    trial.report(0.1, step=2)
    assert trial.should_prune()  # below the median 0.6 at epoch 2


@pytest.mark.parametrize("storage", ["nosuchscheme://host/db", "sqlite:////nonexistent-folder/deeper/study.db"])
def test_a_bad_storage_is_one_error_and_leaves_no_tune_folder(tiny_data, tmp_path, run_cli, storage):
    tune = tmp_path / "new" / "tune"
    code, out, err = run_cli(
        "tune", write_config(tmp_path), "--storage", storage, "--output", tune,
        *tiny_overrides(tiny_data, tmp_path / "tiny"),
    )  # fmt: skip
    assert code == 2 and err.startswith(f"error: Optuna storage {storage}: ") and err.count("\n") == 1
    assert not (tmp_path / "new").exists(), "the folders the command created are taken back"


def test_the_baseline_takes_the_configs_values_that_the_space_can_take():
    cfg = load_config(None, ["train.lr=0.002", "train.ema=true", "augment.preset=light"])
    space = [
        Param("train.lr", "float", low=0.001, high=0.01, log=True),
        Param("train.ema", "categorical", choices=(False, True)),
        Param("augment.preset", "categorical", choices=("none", "strong")),  # light is not a choice here
        Param("train.batch_size", "int", low=4, high=16, step=4),
        Param("train.weight_decay", "float", low=0.1, high=0.5),  # the config's value lies outside
    ]
    cfg.train.batch_size = 6  # off the step grid
    assert baseline(space, cfg) == {"train.lr": 0.002, "train.ema": True}


def test_tpe_models_the_results_after_a_third_of_the_trials():
    assert [random_trials(n) for n in (1, 6, 10, 20, 60)] == [2, 2, 3, 7, 10]
