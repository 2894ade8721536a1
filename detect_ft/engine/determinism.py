"""``train.deterministic``: the process-wide torch settings a run changes, and putting them back.

    saved = DeterminismSettings.current()
    set_determinism(True, device)
    try:
        ...  # train
    finally:
        saved.restore()

These settings are global to the process, so a notebook or test that trains and then does something
else must find them as they were before.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


@dataclass(frozen=True)
class DeterminismSettings:
    """cuDNN's ``deterministic`` and ``benchmark`` flags, torch's deterministic-algorithms mode (and its
    ``warn_only``), and the cuBLAS workspace variable (None: unset)."""

    cudnn_deterministic: bool
    cudnn_benchmark: bool
    algorithms: bool
    warn_only: bool
    cublas_workspace: Optional[str]

    @classmethod
    def current(cls) -> DeterminismSettings:
        return cls(
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            algorithms=torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cublas_workspace=os.environ.get(CUBLAS_WORKSPACE),
        )

    def restore(self) -> None:
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.use_deterministic_algorithms(self.algorithms, warn_only=self.warn_only)
        if self.cublas_workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = self.cublas_workspace


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Reproducible kernels (where torch has them; a warning where not) when ``deterministic``; else
    cuDNN's autotuner on CUDA, which picks the fastest kernels for the input shapes."""
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible matmuls; it must be set before the first call.
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
