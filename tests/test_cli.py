"""The command line: every listed sub-command has working help; overrides may follow options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from detect_ft.cli.main import COMMANDS, main, parse_args


def test_help_lists_exactly_the_registered_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: detect-ft " + name in capsys.readouterr().out


def test_overrides_may_follow_options():
    args = parse_args(["eval", "configs/synthetic.yaml", "a.b=1", "--weights", "x.pt", "train.epochs=3"])
    assert args.overrides == ["a.b=1", "train.epochs=3"] and args.weights == "x.pt"
    with pytest.raises(SystemExit):
        parse_args(["models", "x=1"])


def test_user_mistake_is_one_line_not_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "detect_ft", "check-data", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: config file") and "Traceback" not in result.stderr
