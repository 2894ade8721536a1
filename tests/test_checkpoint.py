"""The checkpoint format: the keys written are the documented ones, ``format_version`` is written and read
(files without it are version 0 and still load, newer ones are refused by every reader), and the run
state survives the round trip through a checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from timm.utils.model_ema import ModelEmaV3

from detect_ft._version import __version__
from detect_ft.checkpoint import format as ckpt
from detect_ft.checkpoint.format import CheckpointError, read_checkpoint, write_checkpoint
from detect_ft.checkpoint.training import load_checkpoint, save_checkpoint
from detect_ft.config.schema import Config, config_to_dict
from detect_ft.engine.state import RunState
from detect_ft.models import build_model, input_normalisation, load_detector
from detect_ft.models.weights import read_weights_file
from detect_ft.utils.errors import WeightsError

MODEL = "ssdlite320_mobilenet_v3_large"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A training checkpoint of a small detector, with EMA, written as ``train`` writes them."""
    cfg = Config()
    cfg.model.name, cfg.model.min_size, cfg.model.max_size = MODEL, 96, 96
    model = build_model(MODEL, 2, weights="none", class_names=["a", "b"], min_size=96)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = RunState(epoch=3, iteration=30, best_value=0.25, best_epoch=2, stale=1, metrics={"map": 0.2})
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint(
        path,
        model=model,
        model_name=MODEL,
        class_names=["a", "b"],
        category_ids=[1, 5],
        config=config_to_dict(cfg),
        optimizer=optimizer,
        ema=ModelEmaV3(model),
        rng=[],
        **state.checkpoint_entries(),
    )
    return path


def _documented_keys() -> set[str]:
    """The keys in the first column of the table under docs/architecture.md's "## Checkpoints"."""
    section = DOCS.read_text().split("## Checkpoints", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {key for row in rows for key in re.findall(r"`(\w+)`", row.split("|")[1])}


def test_the_written_keys_are_the_documented_ones_and_carry_the_format_version(written) -> None:
    saved = torch.load(written, weights_only=True)
    assert set(saved) == set(ckpt.KEYS) == _documented_keys()
    assert saved[ckpt.FORMAT] == ckpt.FORMAT_VERSION == 1 and saved[ckpt.VERSION] == __version__
    assert set(saved[ckpt.EMA]) == {ckpt.EMA_TRAINING_MODEL, "decay", "warmup_power"}
    assert saved[ckpt.NORMALISATION] == input_normalisation(load_detector(written)[0])
    with pytest.raises(ValueError, match="not checkpoint keys: \\['bogus'\\]"):
        write_checkpoint(written.with_name("x.pt"), {ckpt.MODEL: {}, "bogus": 1})


def test_a_file_without_format_version_is_version_0_and_every_reader_takes_it(written, tmp_path) -> None:
    old = torch.load(written, weights_only=True)
    del old[ckpt.FORMAT]
    torch.save(old, tmp_path / "old.pt")
    assert ckpt.format_version(old, tmp_path / "old.pt") == 0
    model, meta = load_detector(tmp_path / "old.pt")
    assert meta["class_names"] == ["a", "b"] and meta["category_ids"] == [1, 5] and meta["epoch"] == 3
    assert load_checkpoint(tmp_path / "old.pt")[ckpt.ITERATION] == 30
    source = read_weights_file(tmp_path / "old.pt", MODEL)
    assert source.class_names == ["__background__", "a", "b"] and source.state.keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    "version, message",
    [
        (2, "has checkpoint format 2 .*newer than the format 1.*upgrade"),
        ("1", "format_version is '1', not a count"),
        (-1, "format_version is '-1', not a count"),
    ],
)
def test_a_newer_or_broken_format_version_is_refused_by_every_reader(written, tmp_path, version, message) -> None:
    saved = torch.load(written, weights_only=True)
    saved[ckpt.FORMAT] = version
    path = tmp_path / "future.pt"
    torch.save(saved, path)
    readers = {
        "checkpoint": load_detector,
        "train.resume": load_checkpoint,
        "model.weights": lambda p: read_weights_file(p, MODEL),
    }
    for what, read in readers.items():
        with pytest.raises(CheckpointError, match=f"^{re.escape(what)}: {re.escape(str(path))} .*{message}"):
            read(path)
    assert issubclass(CheckpointError, WeightsError)


def test_the_reader_says_what_each_caller_needs(tmp_path) -> None:
    bare = {"w": torch.zeros(2)}
    torch.save(bare, tmp_path / "bare.pt")
    read = read_checkpoint(tmp_path / "bare.pt", "model.weights", need="weights")
    assert list(read) == [ckpt.MODEL] and torch.equal(read[ckpt.MODEL]["w"], bare["w"])
    with pytest.raises(CheckpointError, match="not a detect-ft checkpoint \\(no model_name/model entries\\)"):
        read_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="train.resume: .*bare.pt is not a detect-ft training checkpoint"):
        read_checkpoint(tmp_path / "bare.pt", "train.resume", need="training")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="neither a state dict nor a detect-ft checkpoint"):
        read_checkpoint(tmp_path / "list.pt", "model.weights", need="weights")
    torch.save({"model": bare, "class_names": "ab"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="class_names is not a list of K strings"):
        read_checkpoint(tmp_path / "odd.pt", "model.weights", need="weights")
    with pytest.raises(CheckpointError, match="checkpoint .*missing.pt not found; pass a run's checkpoints/best.pt"):
        read_checkpoint(tmp_path / "missing.pt")


def test_run_state_round_trips_through_a_checkpoint(written) -> None:
    state = RunState.from_checkpoint(load_checkpoint(written))
    assert state == RunState(epoch=3, iteration=30, best_value=0.25, best_epoch=2, stale=1, metrics={"map": 0.2})
    assert state.record(0.2) is False and (state.stale, state.best_value) == (2, 0.25)
    state.finish_epoch(steps=10, nonfinite_run=1)
    assert state.record(0.5) is True and (state.best_value, state.best_epoch, state.stale) == (0.5, 4, 0)
    assert state.trainer_entry() == {"best_value": 0.5, "best_epoch": 4, "stale": 0, "nonfinite_run": 1}
    # a checkpoint without a trainer entry (or with an empty one) starts the bookkeeping afresh
    fresh = RunState.from_checkpoint({ckpt.EPOCH: 2, ckpt.ITERATION: 8})
    assert fresh == RunState(epoch=2, iteration=8)
