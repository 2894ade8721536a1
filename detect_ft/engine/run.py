"""``Run`` and ``TrainOptions``: what :func:`~detect_ft.engine.fit.fit` trains, and how.

    options = TrainOptions(accumulate=2, clip_grad_norm=10.0, progress=False)
    run = Run(model=model, optimizer=optimizer, device=device, options=options)
    stats = train_one_epoch(run, loader)          # detect_ft.engine.fit: one epoch, without a Config

:func:`detect_ft.engine.trainer.train` builds the Run of a config (loader factory, schedule, EMA,
validation, resume); a benchmark or a notebook can build one by hand and pass it to
:func:`~detect_ft.engine.fit.train_one_epoch`. Hooks read a Run's attributes and may change them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import torch
import torch.nn as nn

from detect_ft.engine.distributed import DistInfo, unwrap
from detect_ft.engine.state import RunState

if TYPE_CHECKING:
    from timm.utils.model_ema import ModelEmaV3

    from detect_ft.engine.budget import TimeBudget


@dataclass
class TrainOptions:
    """How each batch trains; built once (from ``train.*``) and read by the loop, never unpacked.

    Attributes:
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` to run the forward pass under autocast; None for
            full precision.
        accumulate: batches whose gradients add up before one optimizer step (each loss is divided by it);
            the epoch's last partial window steps too.
        clip_grad_norm: clip the global gradient norm to this before each step (None: no clipping).
        max_iters: at most this many batches an epoch (None: the whole loader). A time budget too short
            for one epoch lowers it.
        max_nonfinite: a non-finite loss skips its batch (no backward); this many in a row, counted across
            epochs, stop the run.
        progress: a tqdm bar per epoch (rank 0) with the running losses, LR, img/s and the budget left.
    """

    amp_dtype: Optional[torch.dtype] = None
    accumulate: int = 1
    clip_grad_norm: Optional[float] = None
    max_iters: Optional[int] = None
    max_nonfinite: int = 10
    progress: bool = True


@dataclass
class Run:
    """One training run as :func:`~detect_ft.engine.fit.fit` drives it. Hooks read its attributes and may
    change them (a test's hook can replace ``evaluate``; any hook can set ``stop_reason``).

    Attributes:
        model: the detector being trained, not wrapped, on ``device``. In train mode
            ``model(images, targets)`` returns a dict of scalar losses (summed into the loss); in eval mode
            ``model(images)`` returns one dict of ``boxes`` (N, 4) xyxy pixels, ``scores``, ``labels`` per image.
        scheduler: stepped after every optimizer step (None: a constant LR); ``scaler``: a GradScaler for
            fp16 autocast; ``ema``: timm's ``ModelEmaV3``, updated after every optimizer step.
        make_loader: ``epoch -> loader`` of that epoch's ``(images, targets)`` batches (None for a run
            whose caller passes the loader to ``train_one_epoch`` itself).
        trainable: ``requires_grad`` of each parameter as built, restored after the frozen epochs.
        freeze_backbone_epochs: epochs at the start that train with the whole backbone frozen (needs
            ``model_name``, the registry name that says what the backbone is).
        evaluate: ``model -> metrics`` (``map``, ``map50``, ``map75``, ``seconds``, ...) on the
            validation split; None without one. ``eval_interval``: validate every that many epochs
            and after the last (0: never).
        best_metric: the metric (higher is better) that picks best.pt and that patience watches.
        state: what carries over epochs and into checkpoints (restored on resume).
        step: the current batch's 0-based index in the epoch (for ``before_step``/``after_step``).
        epoch, train_model, stats, row, improved, rng: the current epoch's 0-based index, the module
            that trains (``model`` or its DDP wrapper; None: ``model``), train_one_epoch's stats, the
            metrics.jsonl row, whether ``best_metric`` improved, and every rank's RNG state for the checkpoint.
        stop_reason: set to end the run after this epoch; error: what ended it, if anything raised.
        budget: ``train.time_budget``'s :class:`~detect_ft.engine.budget.TimeBudget`, which changes
            ``epochs``, ``eval_interval``, ``freeze_backbone_epochs`` and the LR schedule's length after
            each epoch's training and gives the loop its deadline; None for a run of a fixed number of epochs.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    scheduler: Any = None
    make_loader: Optional[Callable[[int], Iterable]] = None
    info: DistInfo = field(default_factory=DistInfo)
    epochs: int = 1
    model_name: str = ""
    trainable: dict[str, bool] = field(default_factory=dict)
    freeze_backbone_epochs: int = 0
    scaler: Optional[torch.amp.GradScaler] = None
    ema: Optional[ModelEmaV3] = None
    options: TrainOptions = field(default_factory=TrainOptions)
    evaluate: Optional[Callable[[nn.Module], dict[str, Any]]] = None
    eval_interval: int = 1
    best_metric: str = "map"
    state: RunState = field(default_factory=RunState)
    epoch: int = 0
    step: int = 0
    train_model: Optional[nn.Module] = None
    frozen: Optional[bool] = None
    stats: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    improved: bool = False
    rng: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: Optional[str] = None
    error: Optional[BaseException] = None
    budget: Optional[TimeBudget] = None

    def training_objects(self) -> dict[str, Any]:
        """What a checkpoint saves and a resume restores besides ``state`` and the RNG, by the keyword
        names of :func:`~detect_ft.checkpoint.training.save_checkpoint` and ``restore_training_state``."""
        return {
            "model": unwrap(self.model),
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "ema": self.ema,
        }

    def validates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) ends with a validation."""
        last = epoch + 1 == self.epochs
        return self.evaluate is not None and self.eval_interval > 0 and ((epoch + 1) % self.eval_interval == 0 or last)
