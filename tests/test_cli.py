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
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: config file") and "Traceback" not in result.stderr


def _library_strings():
    """(file, line, text) of every string literal in the library (detect_ft/ but cli/), docstrings excepted."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "detect_ft"
    for path in sorted(package.rglob("*.py")):
        if "cli" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                yield path.relative_to(package.parent), node.lineno, node.value


def test_library_messages_name_real_commands_and_no_cli_flags():
    """Library code also runs from Python, where no command-line flag exists; where a message sends the
    user to a command, that command must exist."""
    import re

    for path, line, text in _library_strings():
        for word in re.findall(r"`detect-ft ([a-z][a-z-]*)", text):  # a command is quoted: `detect-ft eval`
            assert word in COMMANDS, f"{path}:{line} names `detect-ft {word}`, which is no command"
        flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]+", text)
        flags = [f for f in flags if f != "--nproc_per_node"]  # torchrun's own flag, in a torchrun hint
        assert not flags, f"{path}:{line} names command-line flag(s) {flags} in library code"
