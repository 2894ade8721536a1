"""Hostile, malformed and huge inputs, and commands that could destroy data: every case ends in one
line of error (exit code 2 through the CLI) or a stated, safe handling, never in code running from a
file, a traceback, lost files or unbounded memory. Everything here is small and fast (default tier)."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import yaml

from detect_ft.errors import DetectFTError
from test_train import tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _config(path, overrides: list[str]):
    sections: dict = {}
    for text in overrides:
        key, value = text.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(sections))
    return path


# ---------------------------------------------------------------- untrusted checkpoints never run code


def test_a_pickled_payload_is_refused_by_every_command_and_never_runs(payload_checkpoint, tiny_data, tmp_path,
                                                                      run_cli):  # fmt: skip
    evil, marker = payload_checkpoint
    config = _config(tmp_path / "c.yaml", tiny_overrides(tiny_data, tmp_path / "run"))
    image = next((tiny_data / "images").glob("*.jpg"))
    commands = [
        ("eval", config, "--weights", evil),
        ("export", evil, "--output", tmp_path / "m.onnx", "--no-verify"),
        ("predict", evil, image, "--output", tmp_path / "pred"),
        ("train", config, f"model.weights={evil}", "--no-progress"),
        ("train", config, f"train.resume={evil}", "--no-progress"),
    ]
    for argv in commands:
        code, _, err = run_cli(*argv)
        line = _one_line(err)
        assert code == 2 and "refused to load" in line and str(evil) in line, (argv, err)
        assert "builtins.open" in line or "io.open" in line
        assert not marker.exists(), f"{argv[0]} ran code from the checkpoint"


def test_library_loaders_use_weights_only(payload_checkpoint):
    from detect_ft.engine.checkpoint import load_checkpoint
    from detect_ft.models import load_detector
    from detect_ft.models.weights import read_weights_file

    evil, marker = payload_checkpoint
    for load in (load_detector, load_checkpoint, lambda p: read_weights_file(p, "ssdlite320_mobilenet_v3_large")):
        with pytest.raises(DetectFTError, match="refused to load"):
            load(evil)
    assert not marker.exists()


def test_own_checkpoints_load_with_weights_only_and_carry_plain_rng_state(tmp_path):
    import numpy as np

    from detect_ft.engine.checkpoint import rng_state, set_rng_state

    np.random.seed(3)
    state = rng_state()
    torch.save({"rng": [state]}, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"][0]
    expected = np.random.random(5)
    np.random.seed(99)
    set_rng_state(loaded)
    assert np.array_equal(np.random.random(5), expected)


def test_a_tampered_checkpoint_structure_is_one_line(tmp_path, run_cli):
    path = tmp_path / "odd.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "model_name": "ssdlite320_mobilenet_v3_large", "num_classes": 1,
                "class_names": ["x"], "config": {"model": {"min_size": 10**9}}}, path)  # fmt: skip
    code, _, err = run_cli("export", path, "--output", tmp_path / "m.onnx", "--no-verify")
    assert code == 2 and "config.model.min_size" in _one_line(err)
    torch.save([1, 2, 3], path)
    code, _, err = run_cli("export", path, "--output", tmp_path / "m.onnx", "--no-verify")
    assert code == 2 and "not a usable detect-ft checkpoint" in _one_line(err)


# ---------------------------------------------------------------- files keep the user's permissions


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_get_the_users_umask(tmp_path, mask):
    from detect_ft.io import torch_save_atomic, write_json_atomic, write_text_atomic

    before = os.umask(mask)
    try:
        torch_save_atomic({"w": torch.zeros(2)}, tmp_path / "c.pt")
        write_json_atomic(tmp_path / "m.json", {"a": 1})
        write_text_atomic(tmp_path / "deep" / "t.txt", "x")
    finally:
        os.umask(before)
    for name in ("c.pt", "m.json", "deep/t.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


# ---------------------------------------------------------------- a full disk keeps the old file


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    import resource
    import signal

    from detect_ft.io import torch_save_atomic, write_json_atomic

    path = tmp_path / "last.pt"
    torch_save_atomic({"epoch": 1}, path)
    before = path.read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(DetectFTError) as info:
            torch_save_atomic({"epoch": 2, "w": torch.zeros(100_000)}, path)
        with pytest.raises(DetectFTError, match="m.json"):
            write_json_atomic(tmp_path / "m.json", {"x": "y" * 200_000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "previous last.pt" in message
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "m.json").exists()


# ---------------------------------------------------------------- strict JSON


def test_json_writers_never_write_bare_nan(tmp_path):
    from detect_ft.io import write_json_atomic

    write_json_atomic(tmp_path / "m.json", {"loss": float("nan"), "x": [float("inf"), 1.5]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {"loss": None, "x": [None, 1.5]}


# ---------------------------------------------------------------- train never writes over another run


def _snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_into_a_used_output_dir_starts_a_numbered_run(tiny_data, tmp_path, run_cli):
    from detect_ft.config import load_config
    from detect_ft.engine.trainer import train

    out = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", tiny_overrides(tiny_data, out) + ["train.eval_interval=0",
                                                                          "train.max_iters_per_epoch=1"])
    assert run_cli("train", config, "--no-progress")[0] == 0
    first = _snapshot(out)
    assert "checkpoints/last.pt" in first

    code, printed, _ = run_cli("train", config, "--no-progress")
    assert code == 0 and f"this run writes to {tmp_path / 'run-2'}" in printed
    assert _snapshot(out) == first  # the first run is untouched
    assert (tmp_path / "run-2" / "checkpoints" / "last.pt").is_file()
    saved = load_config(tmp_path / "run-2" / "config.yaml")
    assert saved.output.dir == str(tmp_path / "run-2") and saved.output.overwrite is False

    # an unrelated, non-empty folder is never written into either
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("my notes\n")
    run = train(load_config(config, [f"output.dir={tmp_path / 'mine'}"]), progress=False)
    assert run == tmp_path / "mine-2" and (tmp_path / "mine" / "config.yaml").read_text() == "my notes\n"


def test_resume_continues_and_overwrite_replaces_in_place(tiny_data, tmp_path, run_cli):
    out = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", tiny_overrides(tiny_data, out) + ["train.max_iters_per_epoch=1"])
    assert run_cli("train", config, "--no-progress")[0] == 0
    assert run_cli("train", config, "train.epochs=2", "train.resume=auto", "--no-progress")[0] == 0
    assert not (tmp_path / "run-2").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2

    (out / "notes.txt").write_text("keep me")
    code, printed, _ = run_cli("train", config, "output.overwrite=true", "train.eval_interval=0", "--no-progress")
    assert code == 0 and "output.overwrite=true: replacing the run" in printed and not (tmp_path / "run-2").exists()
    # best.pt of the replaced run is gone: best.pt and last.pt never come from different runs
    assert not (out / "checkpoints" / "best.pt").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (out / "notes.txt").read_text() == "keep me"
