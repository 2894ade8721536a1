"""What a run writes besides checkpoints: metrics.jsonl, loss/mAP plots, TensorBoard events, the summary.

metrics.jsonl holds one JSON object per epoch::

    {"epoch": 3, "iterations": 25, "loss": 1.93, "losses": {"classification": 1.2, "bbox_regression": 0.73},
     "lr": 0.0098, "img_s": 41.7, "time": 4.8, "skipped_steps": 0, "map": 0.412, "map50": 0.733, "map75": 0.41,
     "val_time": 1.2, "elapsed": 31.4}

``map``/``map50``/``map75``/``val_time`` appear only on epochs that were validated; ``elapsed`` is the
wall time since the run (this process's ``train``) began. Every line is strict
JSON: a value that is not finite (the loss of an epoch whose every batch was non-finite) is written as
``null``, never as a bare ``NaN``. The whole file is rewritten atomically after each epoch (it is small),
so a kill never leaves a half line, and a resumed run drops the rows of epochs it is about to redo.

The run's messages (the banner, one line an epoch, the summary) are ``logging`` records at INFO of the
``detect_ft`` loggers; :func:`console_messages` decides where they show.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from detect_ft.utils.atomic_io import atomic_path, dumps_json, json_safe, write_text_atomic

PACKAGE_LOGGER = "detect_ft"


def bare_stdout_handler() -> logging.Handler:
    """A handler writing each record's bare message to the ``sys.stdout`` of now, as ``print`` would."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


@contextlib.contextmanager
def console_messages(is_main: bool = True) -> Iterator[None]:
    """Within this block, show the ``detect_ft`` loggers' INFO messages to a caller who configured no logging.

    When neither the ``detect_ft`` logger nor the root logger has a handler (a script or a notebook that
    just calls ``train`` or ``Detector.train``), a handler writing the bare message to ``sys.stdout`` (as
    ``print`` did) is attached to the ``detect_ft`` logger, at INFO unless the caller set its level, and
    removed at the end: the epoch lines show without the caller setting up logging, and nothing stays
    configured after the call. When logging is configured (``detect-ft``'s command line, ``logging.basicConfig``, pytest), the records go
    to the configured handlers at the configured levels, and nothing is attached.

    ``is_main=False`` (a DDP rank other than 0) lets only warnings and errors through, so that every line
    shows once, not once per process.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    level, handler = logger.level, None
    if not is_main:
        logger.setLevel(logging.WARNING)
    elif not logger.handlers and not logging.getLogger().handlers:
        handler = bare_stdout_handler()
        logger.addHandler(handler)
        if level == logging.NOTSET:  # a level the caller set on the logger stays
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)


class MetricsLog:
    """The rows of ``metrics.jsonl``; ``keep_epochs`` keeps the existing rows up to that epoch (resume)."""

    def __init__(self, path: Path, keep_epochs: int = 0):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if keep_epochs and self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row.get("epoch", 0) <= keep_epochs:
                        self.rows.append(row)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(json_safe(row))
        write_text_atomic(self.path, "".join(dumps_json(r) + "\n" for r in self.rows))


def write_training_plots(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``loss.png`` (total and each loss component per epoch) and, once validated, ``map.png``.

    Drawn on standalone matplotlib ``Figure`` objects: no pyplot state, no backend switch in the caller's
    process (a notebook keeps its own).
    """
    from matplotlib.figure import Figure

    written: list[Path] = []
    if not rows:
        return written
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(epochs, [_value(r["loss"]) for r in rows], marker="o", linewidth=2, label="total")
    for name in rows[-1].get("losses", {}):
        points = [(r["epoch"], _value(r["losses"][name])) for r in rows if name in r.get("losses", {})]
        ax.plot(*zip(*points), marker=".", linewidth=1, label=name)
    ax.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "loss.png"))
    validated = [r for r in rows if r.get("map") is not None]
    if validated:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        for key in ("map", "map50", "map75"):
            points = [(r["epoch"], r[key]) for r in validated if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
        ax.set(xlabel="epoch", ylabel="validation AP", title="Validation mAP", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / "map.png"))
    return written


def _value(value: Optional[float]) -> float:
    """A logged number for plotting: null (a non-finite value) becomes a gap."""
    return float("nan") if value is None else float(value)


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def open_tensorboard(log_dir: Path):
    """A ``SummaryWriter`` writing under ``log_dir``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package (pip install detect-ft[tensorboard])
        return None
    return SummaryWriter(log_dir=str(log_dir))


def log_tensorboard(writer, row: dict[str, Any]) -> None:
    """The epoch's scalars: loss/*, lr, img_s and, when validated, val/map*."""
    if writer is None:
        return
    epoch = row["epoch"]
    writer.add_scalar("loss/total", _value(row["loss"]), epoch)
    for name, value in row.get("losses", {}).items():
        writer.add_scalar(f"loss/{name}", _value(value), epoch)
    writer.add_scalar("lr", row["lr"], epoch)
    writer.add_scalar("img_s", row["img_s"], epoch)
    for key in ("map", "map50", "map75"):
        if row.get(key) is not None:
            writer.add_scalar(f"val/{key}", row[key], epoch)
    writer.flush()


def format_summary(
    *,
    run_dir: Path,
    model_name: str,
    rows: list[dict[str, Any]],
    best: dict[str, Any],
    best_metric: str,
    stopped: Optional[str],
    seconds: float,
    files: list[Path],
    constant_predictions: bool = False,
    time_budget: Optional[float] = None,
) -> str:
    """The one-screen end-of-run summary: what was trained, the best epoch and metric, whether validation
    was still rising at the end (:func:`validation_trend`), where files are; a warning when the last
    validation's predictions did not depend on the image."""
    lines = ["", "=" * 72, f"training finished: {model_name}, {len(rows)} epoch rows in {_duration(seconds)}"]
    if stopped:
        lines.append(f"stopped early: {stopped}")
    if constant_predictions:
        lines.append(
            "WARNING: collapsed model: it gives every validation image the same detections (the same boxes at "
            "the same places, or the same scores), so it does not look at the images; freeze the pretrained "
            "backbone for the first part of the run (train.freeze_backbone_fraction=0.33), lower train.lr, "
            "or train longer if the learning rate was still in warm-up"
        )
    if rows:
        last = rows[-1]
        lines.append(
            f"last epoch {last['epoch']}: loss {_value(last['loss']):.4f}, {last['img_s']:.1f} img/s, "
            f"lr {last['lr']:.3g}"
        )
        if last.get("map") is not None:
            lines.append(
                f"  val map {last['map']:.4f}  map50 {last['map50']:.4f}  map75 {last.get('map75', float('nan')):.4f}"
            )
    notes = [r["note"] for r in rows if r.get("note")]
    if best.get("epoch") is not None:
        lines.append(f"best {best_metric} {best['value']:.4f} at epoch {best['epoch']}")
        trend = validation_trend(rows, best_metric, time_budget)
        if trend:
            lines.append(trend)
    elif notes:
        lines.append(f"validation: {notes[-1]}; best.pt not written (last.pt holds the final weights)")
    else:
        lines.append(
            "no validation ran (data.val empty or train.eval_interval=0): best.pt not written; last.pt holds "
            "the final weights, without per-class thresholds (predict takes it; export needs a data.val for its "
            "parity check, or export.verify=false)"
        )
    lines.append(f"run directory: {run_dir}")
    for path in files:
        if path.exists():
            lines.append(f"  {path.relative_to(run_dir) if path.is_relative_to(run_dir) else path}")
    lines.append("=" * 72)
    return "\n".join(lines)


# A rise of at least this much (absolute AP, or this share of the final value) over the last third of the
# validations counts as "still rising"; a fall of as much from the best counts as "peaked".
TREND_MIN_GAIN = 0.01
TREND_MIN_SHARE = 0.05


def validation_trend(rows: list[dict[str, Any]], metric: str, time_budget: Optional[float] = None) -> str:
    """One line saying whether ``metric`` was still rising at the end of the run (with a longer run to
    try), had peaked early, or levelled off; '' with fewer than 3 validations."""
    points = [(r["epoch"], r[metric]) for r in rows if r.get(metric) is not None]
    if len(points) < 3:
        return ""
    epochs, values = zip(*points)
    best = max(range(len(values)), key=lambda i: (values[i], -i))
    recent = max(len(values) // 3, 2)
    gain, fall = values[-1] - values[-recent], values[best] - values[-1]
    margin = max(TREND_MIN_GAIN, TREND_MIN_SHARE * max(values[best], 1e-9))
    longer = f"train.time_budget={_duration(2 * time_budget)}" if time_budget else f"train.epochs={2 * epochs[-1]}"
    if gain >= margin and best == len(values) - 1:
        return (
            f"validation {metric} was still rising at the end (+{gain:.3f} over the last {epochs[-1] - epochs[-recent]} "
            f"epochs): a longer run should do better, e.g. {longer}"
        )
    if fall >= margin and epochs[best] <= epochs[-1] * 2 / 3:
        return (
            f"validation {metric} peaked at epoch {epochs[best]} of {epochs[-1]} and fell by {fall:.3f} after it: "
            "best.pt keeps the peak; a shorter run would have done as well"
        )
    return f"validation {metric} levelled off by the end: a longer run is unlikely to gain much"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
