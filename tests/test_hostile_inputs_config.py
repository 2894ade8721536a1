"""Hostile or mistaken settings of a run (config values, output.dir, weights files) and of the Python API:
each ends in one line naming the key or argument and what is allowed, leaves nothing behind, and runs no
code from a file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from helpers import one_error_line, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def empty_config(tmp_path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path


def test_a_refused_weights_file_leaves_no_run_folder_behind(
    payload_checkpoint, tiny_data, tmp_path, empty_config, run_cli
):
    evil, marker = payload_checkpoint
    out = tmp_path / "runs" / "exp"  # neither folder exists yet: both are the run's to take back
    code, _, err = run_cli("train", empty_config, *tiny_overrides(tiny_data, out), f"model.weights={evil}")
    assert code == 2 and "refused to load" in one_error_line(err) and not marker.exists()
    assert not (tmp_path / "runs").exists()

    # a folder that was there before the run stays; a numbered sibling the run made for itself goes
    (tmp_path / "mine").mkdir()
    code, _, err = run_cli(
        "train", empty_config, *tiny_overrides(tiny_data, tmp_path / "mine"), f"model.weights={evil}"
    )
    assert code == 2 and (tmp_path / "mine").is_dir() and os.listdir(tmp_path / "mine") == []
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine\n")
    code, _, err = run_cli(
        "train", empty_config, *tiny_overrides(tiny_data, tmp_path / "used"), f"model.weights={evil}"
    )
    assert code == 2 and not (tmp_path / "used-2").exists() and (tmp_path / "used" / "notes.txt").is_file()


def test_a_blocked_module_in_a_checkpoint_is_named(tmp_path):
    from detect_ft.checkpoint.format import read_checkpoint
    from detect_ft.utils.errors import DetectFTError

    marker = tmp_path / "RAN"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "shell.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Shell()}, path)
    with pytest.raises(DetectFTError, match=r"refused to load .*pickled Python objects \((posix|nt)\.system\)"):
        read_checkpoint(path, "model.weights", need="weights")
    assert not marker.exists()


def test_an_output_dir_under_a_file_is_one_line(tiny_data, tmp_path, empty_config, run_cli):
    (tmp_path / "file").write_text("not a folder\n")
    code, _, err = run_cli("train", empty_config, *tiny_overrides(tiny_data, tmp_path / "file" / "runs" / "exp"))
    line = one_error_line(err)
    assert code == 2 and "output.dir" in line and f"{tmp_path / 'file'} is a file, not a folder" in line


def test_an_output_dir_on_read_only_storage_is_one_line(tiny_data, tmp_path, empty_config, run_cli, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, _, err = run_cli("train", empty_config, *tiny_overrides(tiny_data, tmp_path / "ro" / "exp"))
    line = one_error_line(err)
    assert code == 2 and f"cannot create the run folder {tmp_path / 'ro' / 'exp'} (read-only file system)" in line
    assert "output.dir" in line
