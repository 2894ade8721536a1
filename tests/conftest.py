"""Fixtures shared by several test files: tiny data, an exported model and a trained run, made on the spot
and never downloaded (the plain helpers they use are in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import exported_model, make_tiny_data, tiny_config


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs one worker per core) each worker keeps one intra-op torch thread:
    a second one per worker would compete for the cores the other workers use, and spin-waiting OpenMP
    threads make that far slower than running alone (see ``one_thread``)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (exit code, stdout, stderr)`` of ``detect-ft argv`` in this process."""
    from detect_ft.cli.main import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def payload_checkpoint(tmp_path):
    """``(path, marker)``: a .pt file whose unpickling would create ``marker``; it must never exist."""
    import torch

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    # Shaped like a detect-ft checkpoint, so only the pickled object stands between it and loading.
    torch.save(
        {
            "model": Payload(),
            "model_name": "ssdlite320_mobilenet_v3_large",
            "num_classes": 1,
            "class_names": ["x"],
            "epoch": 1,
            "iteration": 1,
            "optimizer": {},
        },
        path,
    )
    assert not marker.exists()
    return path, marker


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """12 train and 4 val synthetic 96x96 images with two shape classes, COCO layout (read-only: copy it
    before changing anything)."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    """The session's one trained run, for tests that only need *a* trained checkpoint and its run folder:
    ``TINY_MODEL`` from random weights on ``tiny_data`` as :func:`helpers.tiny_config` says (128 px, one
    epoch of 2 steps, then a validation), through the trainer as ``detect-ft train`` runs it.

    The run folder holds ``config.yaml``, ``metrics.jsonl`` and ``checkpoints/best.pt`` and ``last.pt``
    (classes circle, square). Read-only: copy what you change into your own ``tmp_path`` first.
    """
    from detect_ft.engine.trainer import train

    return train(tiny_config(tiny_data, tmp_path_factory.mktemp("trained_run") / "run"), progress=False)


@pytest.fixture(scope="session")
def exported_onnx(tmp_path_factory) -> dict:
    """The session's one exported detector: ``ssdlite320_mobilenet_v3_large`` (spread-out random weights)
    through ``detect-ft export --int8``, parity-checked on pseudo-labelled synthetic data.

    Keys: ``model`` (the PyTorch model), ``name``, ``root`` (COCO data), ``val`` (its records),
    ``checkpoint``, ``onnx``, ``int8`` and ``images`` (the data's image folder). Read-only: write elsewhere.
    ``export.int8_max_map_drop=100``: INT8 of this random-init model, calibrated on 2 images, loses far more
    than the default 1 AP point and would be refused (tests/test_export.py tests the gate on its own).
    """
    return exported_model(tmp_path_factory.mktemp("exported_onnx"), overrides=("export.int8_max_map_drop=100",))


@pytest.fixture
def one_thread():
    """One intra-op torch thread: on a shared 2-core machine two spin-waiting OpenMP threads can be far
    slower than one (see tests/test_train.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
