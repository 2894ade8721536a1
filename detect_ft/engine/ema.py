"""Exponential moving average of a model's weights, used for validation and saved as the deployed model.

    ema = ModelEMA(model, decay=0.9998)
    ...  # after every optimizer step:
    ema.update(model)
    evaluate(ema.module)

The decay ramps up from 0 (``decay * (1 - exp(-updates / tau))``, as in YOLOv5), so on a short
fine-tuning run of a few hundred steps the average follows the weights instead of staying near the
starting point; on long runs it settles at ``decay``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn

# Steps over which the effective decay ramps up to ``decay`` (reaches 63% of it after ``tau`` steps).
EMA_TAU = 2000.0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """A frozen copy of ``model`` whose floating-point parameters and buffers track an EMA.

    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied as they are. ``module`` is kept in
    eval mode and never receives gradients.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = EMA_TAU, updates: int = 0):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the weights of ``model`` (wrapped or not) into the average: ``ema = d * ema + (1 - d) * w``."""
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        averaged, copied = [], []
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                averaged.append((value, source[key].detach()))
            else:
                copied.append((value, source[key]))
        if averaged:
            ema_values = [a for a, _ in averaged]
            # One fused kernel over all tensors instead of one per tensor.
            torch._foreach_lerp_(ema_values, [b.to(a.dtype) for a, b in averaged], 1.0 - d)
        for target, value in copied:
            target.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
        self.tau = float(state.get("tau", self.tau))
