"""tools/bench_gpu.py and the overhead check of tools/bench_train.py: their arithmetic and arguments (no timing)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import load_tool


@pytest.fixture(scope="module")
def bench():
    return load_tool("bench_gpu")


def test_trainer_figures_separate_the_steady_pace_from_the_start_costs(bench) -> None:
    clock = bench.EpochClock
    # 3 batches of 2 images an epoch. Later epochs: 0.5 s to start, then 1 s a batch; the first epoch
    # ends 3.5 s later than such an epoch would.
    epochs = [
        clock(began=0.0, step_ends=[5.0, 6.0, 7.0], images=6),
        clock(began=10.0, step_ends=[11.5, 12.5, 13.5], images=6),
        clock(began=20.0, step_ends=[21.5, 22.5, 23.5], images=6),
    ]
    figures = bench.summarize_epochs(epochs)
    assert figures["step_s"] == pytest.approx(1.0)
    assert figures["img_s"] == pytest.approx(2.0)
    assert figures["epoch_start_s"] == pytest.approx(0.5)
    assert figures["first_extra_s"] == pytest.approx(3.5)


@pytest.mark.parametrize("step_ends", [[[1.0, 2.0]], [[1.0, 2.0], [3.0]]])
def test_trainer_figures_need_two_epochs_of_two_batches(bench, step_ends) -> None:
    epochs = [bench.EpochClock(began=0.0, step_ends=ends, images=2) for ends in step_ends]
    with pytest.raises(ValueError, match="2 or more epochs of 2 or more batches"):
        bench.summarize_epochs(epochs)


def test_row_ratios_are_against_the_bare_step(bench) -> None:
    figures = dict(bare_img_s=200.0, loader_img_s=100.0, img_s=150.0, dtype="bf16", epoch_start_s=0.25)
    figures.update(first_extra_s=30.0, setup_s=4.0, peak_gib=math.nan)
    cells = [c.strip() for c in bench.row_line("m", 16, "amp", figures).strip("|").split("|")]
    assert cells[:8] == ["m", "amp (bf16)", "16", "200.0", "100.0", "150.0", "0.75", "0.50"]
    assert len(cells) == bench.HEADER.splitlines()[0].count("|") - 1 and cells[-1] == "-"  # no GPU memory
    figures.update(dtype="fp32", peak_gib=1.234)
    cells = [c.strip() for c in bench.row_line("m", 16, "fp32", figures).strip("|").split("|")]
    assert (cells[1], cells[-1]) == ("fp32", "1.23")


def test_tiny_changes_defaults_but_explicit_flags_win(bench) -> None:
    tiny = bench.parse_args(["--tiny", "--device", "cpu"])
    assert (tiny.batch_list, tiny.epochs, tiny.iters, tiny.size) == ([2], 2, 3, (160, 120))
    assert tiny.set[:2] == bench.TINY_SET
    mixed = bench.parse_args(["--tiny", "--epochs", "4", "--set", "train.workers=0"])
    assert mixed.epochs == 4 and mixed.set == [*bench.TINY_SET, "train.workers=0"]
    default = bench.parse_args([])
    assert (default.batch_list, default.set, default.device) == ([16, 64], [], "cuda")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "1"], "2 or more"),
        (["--precisions", "fp32,fp8"], "fp8 unknown"),
        (["--batches", "16,big"], "--batches"),
    ],
)
def test_bad_arguments_get_one_line(bench, argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_profile_folder_with_files_is_refused(bench, tmp_path, capsys) -> None:
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(SystemExit):
        bench.parse_args(["--profile", str(tmp_path)])
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "old.json").read_text() == "{}"


def test_overhead_check_times_four_loops_that_train(bench, one_thread) -> None:
    trainer = bench.bench_train
    ms = trainer.step_overhead(torch.device("cpu"), iters=3, repeats=2)
    assert list(ms) == ["forward + backward only", "bare loop", "train_one_epoch", "train_one_epoch + progress bar"]
    assert all(value > 0 for value in ms.values())
    lines = trainer.overhead_lines(ms)
    assert len(lines) == 2 + len(ms) and lines[3].startswith("| bare loop |") and lines[3].endswith("| +0.000 | 1.00 |")


def test_tiny_detector_losses_fall_under_train_one_epoch(bench, one_thread) -> None:
    from detect_ft.engine.fit import train_one_epoch
    from detect_ft.engine.run import Run, TrainOptions

    trainer = bench.bench_train
    torch.manual_seed(0)
    model = trainer.TinyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = trainer.tiny_batches(2, batch=2, size=32, device=torch.device("cpu"))
    run = Run(model=model, optimizer=optimizer, options=TrainOptions(progress=False))
    first = train_one_epoch(run, batches * 5)
    later = train_one_epoch(run, batches * 5)
    assert set(first["losses"]) == {"classification", "box_regression"}
    assert math.isfinite(first["loss"]) and later["loss"] < first["loss"]


def test_rows_train_what_a_fine_tune_from_pretrained_weights_trains(bench, tmp_path) -> None:
    from detect_ft.config.schema import load_config

    args = bench.parse_args(["--device", "cpu", "--set", "train.workers=0"])
    expected = {  # (trainable backbone stages, frozen BatchNorm): the recipe's or the registry's
        "ssdlite320_efficientnet_lite0": (3, False),
        "fasterrcnn_efficientnet_lite0_fpn": (3, True),
        "fasterrcnn_mobilenet_v3_large_fpn": (3, True),
    }
    assert set(expected) == set(bench.MODELS)
    for model, (layers, frozen_bn) in expected.items():
        data = ["data.format=coco", f"data.root={tmp_path}", "data.train=train.json"]
        cfg = load_config(None, bench.trainer_overrides(model, 16, "amp", data, args, tmp_path / "run"))
        assert (cfg.model.weights, cfg.model.trainable_backbone_layers, cfg.model.frozen_bn) == (
            "none",
            layers,
            frozen_bn,
        )
        assert (cfg.train.freeze_backbone_epochs, cfg.train.freeze_backbone_fraction) == (0, 0)
        assert (cfg.train.amp, cfg.train.batch_size, cfg.train.workers, cfg.data.val) == (True, 16, 0, "")
    assert bench.as_if_pretrained("no_such_model") == []
