"""Resuming on CPU with deterministic settings repeats the uninterrupted run bit for bit, also after a
SIGKILL in the middle of an epoch and from a checkpoint of an earlier version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import make_tiny_data, tiny_config, tiny_overrides

from detect_ft.checkpoint.training import load_checkpoint
from detect_ft.engine.trainer import train

REPO = Path(__file__).resolve().parent.parent

# EMA, augmentation and a schedule crossing the epoch boundary (3 warmup steps over 2-step epochs, a
# multistep milestone at epoch 1) all have state that a resume must restore. Multistep (unlike cosine)
# does not depend on train.epochs, so "1 epoch, then resume to 2" has the schedule of "2 epochs".
RESUME_OVERRIDES = [
    "train.deterministic=true",
    "train.ema=true",
    "train.ema_decay=0.9",
    "augment.preset=light",
    "train.scheduler=multistep",
    "train.milestones=[1]",
    "train.warmup_iters=3",
    "train.optimizer=sgd",
    "train.momentum=0.9",
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical results need one fixed thread count in every run compared
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory) -> Path:
    """Two epochs without interruption: the reference."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("straight") / "run"
        train(tiny_config(data_dir, out, "train.epochs=2", *RESUME_OVERRIDES), progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def _assert_same_state(a: dict, b: dict, where: str = "") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"tensors differ at {where}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _assert_same_training(run_a: Path, run_b: Path) -> None:
    a = torch.load(run_a / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run_b / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "ema", "optimizer", "scheduler", "epoch", "iteration", "trainer"):
        _assert_same_state(a[key], b[key], key)
    timed = {"seconds", "images_per_s"}
    _assert_same_state(
        {k: v for k, v in a["metrics"].items() if k not in timed},
        {k: v for k, v in b["metrics"].items() if k not in timed},
        "metrics",
    )
    rows_a = [json.loads(line) for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (run_b / "metrics.jsonl").read_text().splitlines()]
    timing = {"img_s", "time", "val_time", "elapsed"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows_a] == [
        {k: v for k, v in r.items() if k not in timing} for r in rows_b
    ]


def test_one_epoch_then_resume_equals_two_epochs(data_dir, straight_run, tmp_path) -> None:
    out = tmp_path / "run"
    train(tiny_config(data_dir, out, "train.epochs=1", *RESUME_OVERRIDES), progress=False)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    train(tiny_config(data_dir, out, "train.epochs=2", "train.resume=auto", *RESUME_OVERRIDES), progress=False)
    _assert_same_training(straight_run, out)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_from_last(data_dir, straight_run, tmp_path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "config.yaml"
    sections: dict = {}
    for text in tiny_overrides(data_dir, out) + ["train.epochs=2", *RESUME_OVERRIDES]:
        key, value = text.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    config.write_text(yaml.safe_dump(sections))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    last = out / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "detect_ft", "train", str(config), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while not last.exists():  # os.replace makes it appear complete, never half-written
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # during epoch 2 (or while epoch 1's files are written)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "the run finished before it was killed; give it more work"

    checkpoint = load_checkpoint(last)  # readable, not truncated
    assert checkpoint["epoch"] == 1
    train(tiny_config(data_dir, out, "train.epochs=2", "train.resume=auto", *RESUME_OVERRIDES), progress=False)
    assert load_checkpoint(last)["epoch"] == 2
    assert not list(last.parent.glob(".*.tmp"))  # a write cut short by the kill is cleaned up
    _assert_same_training(straight_run, out)


def test_resume_rejects_a_missing_or_foreign_checkpoint(data_dir, tmp_path) -> None:
    from detect_ft.utils.errors import DetectFTError

    with pytest.raises(DetectFTError, match="train.resume: checkpoint .*nope.pt not found"):
        train(tiny_config(data_dir, tmp_path / "a", f"train.resume={tmp_path / 'nope.pt'}"), progress=False)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DetectFTError, match="not a readable checkpoint"):
        train(tiny_config(data_dir, tmp_path / "b", f"train.resume={junk}"), progress=False)


def test_a_checkpoint_of_an_earlier_version_still_resumes(data_dir, straight_run, tmp_path) -> None:
    """Earlier versions kept NumPy's RNG state as a pickled array (the one non-plain type the loader allows:
    a pickled array builds an array, nothing else) and, with EMA on, their own ModelEMA's state (``updates``,
    ``decay``, ``tau``); such a checkpoint resumes, and to the same weights as a run never interrupted."""
    import numpy as np

    out = tmp_path / "run"
    train(tiny_config(data_dir, out, "train.epochs=1", *RESUME_OVERRIDES), progress=False)
    last = out / "checkpoints" / "last.pt"
    checkpoint = torch.load(last, weights_only=True)
    for state in checkpoint["rng"]:  # the old layout of the same state: ('MT19937', uint32 array, pos, ...)
        n = state["numpy"]
        state["numpy"] = (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    raw = checkpoint["ema"]["training_model"]
    checkpoint["ema"] = {"training_model": raw, "updates": checkpoint["iteration"], "decay": 0.9, "tau": 2000.0}
    torch.save(checkpoint, last)
    assert load_checkpoint(last)["epoch"] == 1
    train(tiny_config(data_dir, out, "train.epochs=2", "train.resume=auto", *RESUME_OVERRIDES), progress=False)
    _assert_same_training(straight_run, out)
