"""Experiment tracking: ``train.track=mlflow`` records a run in MLflow as it trains.

    store = open_store(track_settings(cfg.output.dir, cfg.data.root))   # before the run folder is made
    tracker = MlflowTracker(store, run_dir=run_dir, config=config_to_dict(cfg), tags={"model": ...})
    train(cfg)   # the trainer does this (rank 0 only) and adds the tracker to its hooks when train.track=mlflow

One MLflow run per training run: the whole config as params (dotted keys, ``train.lr``), each epoch's
metrics row (``loss``, ``losses/<component>``, ``lr``, ``img_s``, ``time``, and after a validation ``map``,
``map50``, ``map75``, ``val_time``) as metrics at step = epoch, tags for the model, the dataset and the starting weights, and at the end
``config.yaml``, ``metrics.jsonl``, the plots and the best checkpoint as artifacts. The run's id is
written to ``<run_dir>/mlflow.json`` (``tracking_uri``, ``experiment_id``, ``run_id``), so that later
steps can add to the same run: :func:`log_export` adds an export of ``<run_dir>/checkpoints/best.pt`` (the
model files and the export report, under ``export/``) to it.

The store: ``train.track_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file ``mlflow.db`` beside the
run folders (``<output.dir's parent>/mlflow.db``): nothing to start. A SQLite store's new experiments keep
their artifacts in ``mlartifacts/`` beside its file (MLflow's own default is the working directory).
MLflow is optional (``pip install 'detect-ft[track]'``); it is imported only when a run is tracked.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from detect_ft.engine.hooks import Hook
from detect_ft.engine.run import Run
from detect_ft.utils.atomic_io import dumps_json, write_text_atomic
from detect_ft.utils.errors import DetectFTError

LOG = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "detect-ft"
RUN_ID_FILE = "mlflow.json"
# MLflow's limits: 100 params a log_batch request and 6000 characters a param value.
PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
SQLITE_PREFIX = "sqlite:///"
EXPORT_ARTIFACTS = "export"  # the folder of a tracked run that log_export adds the exported models to


@dataclass
class TrackSettings:
    """Where a tracked run goes: the MLflow tracking URI, the experiment's name, and (for the default
    SQLite store only) the folder that new experiments keep their artifacts in (None: the store decides)."""

    uri: str
    experiment: str
    artifact_root: Optional[Path] = None


def require_mlflow() -> None:
    """Raise a one-line DetectFTError when MLflow is not installed (before anything is trained or written)."""
    if importlib.util.find_spec("mlflow") is None:
        raise DetectFTError(
            "train.track=mlflow needs MLflow, which is not installed; "
            "run `pip install 'detect-ft[track]'` or set train.track=none"
        )


def track_settings(output_dir: str, data_root: str, uri: str = "", experiment: str = "") -> TrackSettings:
    """The store and experiment of a run writing to ``output_dir``: ``uri`` (train.track_uri), else
    ``MLFLOW_TRACKING_URI``, else ``sqlite:///<output_dir's parent>/mlflow.db``; ``experiment``
    (train.track_experiment), else the dataset folder's name (``data_root``), else ``detect-ft``. A SQLite
    store keeps new experiments' artifacts in ``mlartifacts/`` beside its file."""
    name = experiment or (Path(data_root).resolve().name if data_root else "") or DEFAULT_EXPERIMENT
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not chosen:
        store = Path(output_dir).resolve().parent
        return TrackSettings(f"sqlite:///{store / 'mlflow.db'}", name, artifact_root=store / "mlartifacts")
    if chosen.startswith(SQLITE_PREFIX):
        # MLflow would put a new experiment's artifacts in ./mlruns of whatever folder training starts in
        database = Path(chosen[len(SQLITE_PREFIX) :]).resolve()
        return TrackSettings(chosen, name, artifact_root=database.parent / "mlartifacts")
    return TrackSettings(chosen, name)  # a server decides where artifacts go


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.01}}`` -> ``{"train.lr": "0.01"}``: every leaf as a string MLflow accepts
    (lists as their Python repr, cut to MLflow's 6000 characters)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            text = str(value)
            out[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return out


def row_metrics(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics.jsonl row by its names, a nested one joined with ``/``
    (``losses/classification``), less ``epoch`` (it is the step); booleans, text (``note``) and metrics not
    measured (None) are left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(row_metrics(value, f"{prefix}{key}/"))
        elif not (key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float))):
            if math.isfinite(value):
                out[f"{prefix}{key}"] = float(value)
    return out


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class TrackStore:
    """An opened MLflow store: its settings, the ``MlflowClient`` and the experiment's id."""

    settings: TrackSettings
    client: Any
    experiment_id: str


def open_store(settings: TrackSettings) -> TrackStore:
    """Connect to ``settings.uri`` and find or create the experiment (a new one in the default store keeps
    its artifacts in ``settings.artifact_root``).

    Raises:
        DetectFTError: the store cannot be opened or written (one line naming the URI and the keys).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, root = settings.experiment, settings.artifact_root
    try:
        with warnings.catch_warnings():
            # MLflow's SQL store still asks SQLAlchemy 2.1 for the deprecated ``noload``; nothing for a user to do
            warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
            client = MlflowClient(tracking_uri=settings.uri)
            found = client.get_experiment_by_name(name)
            if found is None:
                try:
                    client.create_experiment(name, artifact_location=root.as_uri() if root else None)
                except MlflowException:
                    if client.get_experiment_by_name(name) is None:  # else a parallel run created it first
                        raise
                found = client.get_experiment_by_name(name)
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise DetectFTError(
            f"train.track=mlflow: cannot record into {settings.uri} ({reason}); set train.track_uri or "
            "MLFLOW_TRACKING_URI to a reachable store (a server, or sqlite:///path/mlflow.db), or unset both"
        ) from None
    return TrackStore(settings, client, found.experiment_id)


class MlflowTracker(Hook):
    """Records the run in ``store`` (see the module): the run and its params in ``before_train``, metrics
    after each epoch, artifacts and the final status (FINISHED, FAILED, KILLED) in ``after_train``.

    A failure to log after the run began is a warning (the run folder keeps everything) and training goes on.
    """

    def __init__(self, store: TrackStore, *, run_dir: Path, config: dict[str, Any], tags: dict[str, str]) -> None:
        self.store, self.run_dir, self.config, self.tags = store, Path(run_dir), config, tags
        self.client = store.client
        self.run_id: Optional[str] = None

    def before_train(self, run: Run) -> None:
        from mlflow.entities import Param

        tags = dict(self.tags)
        if run.state.epoch:  # a resumed run is a new MLflow run that starts at a later epoch
            tags["resumed_after_epoch"] = str(run.state.epoch)
        experiment_id, settings = self.store.experiment_id, self.store.settings
        self.run_id = self.client.create_run(experiment_id, tags=tags, run_name=self.run_dir.name).info.run_id
        params = [Param(key, value) for key, value in flat_params(self.config).items()]
        for chunk in _chunks(params, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)
        record = {"tracking_uri": settings.uri, "experiment_id": experiment_id, "run_id": self.run_id}
        write_text_atomic(self.run_dir / RUN_ID_FILE, json.dumps(record, indent=2) + "\n")
        LOG.info(f"tracking in MLflow: experiment {settings.experiment!r}, run {self.run_id} at {settings.uri}")

    def after_epoch(self, run: Run) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(run.row["epoch"])
        metrics = [Metric(key, value, now, step) for key, value in row_metrics(run.row).items()]
        self._safely("log the epoch's metrics", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def after_train(self, run: Run) -> None:
        if self.run_id is None:  # before_train did not get as far as a run
            return
        self._safely("upload the run's files", self._log_artifacts)
        status = "FINISHED"
        if run.error is not None:
            status = "KILLED" if isinstance(run.error, KeyboardInterrupt) else "FAILED"
        self._safely("close the run", lambda: self.client.set_terminated(self.run_id, status))

    def _log_artifacts(self) -> None:
        """config.yaml and metrics.jsonl at the top, ``plots/``, and best.pt (last.pt without one) in ``checkpoints/``."""
        for name in ("config.yaml", "metrics.jsonl"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        if (self.run_dir / "plots").is_dir():
            self.client.log_artifacts(self.run_id, str(self.run_dir / "plots"), "plots")
        checkpoints = self.run_dir / "checkpoints"
        best = checkpoints / "best.pt" if (checkpoints / "best.pt").is_file() else checkpoints / "last.pt"
        if best.is_file():
            self.client.log_artifact(self.run_id, str(best), "checkpoints")

    def _safely(self, what: str, action) -> None:
        try:
            action()
        except Exception as exc:  # a tracking outage must not cost the training; the files are on disk
            LOG.warning(f"MLflow: could not {what} ({type(exc).__name__}: {str(exc)[:200]}); training goes on")


def tracked_run_record(checkpoint: str | os.PathLike) -> Optional[dict[str, str]]:
    """The MLflow run that trained ``checkpoint``: ``<run_dir>/mlflow.json`` of a checkpoint at
    ``<run_dir>/checkpoints/<name>.pt`` (``tracking_uri``, ``experiment_id``, ``run_id``), or None for a
    checkpoint elsewhere or an untracked run. A record without ``tracking_uri`` gets the store that training
    would have chosen by default (``MLFLOW_TRACKING_URI``, else ``mlflow.db`` beside the run folder)."""
    path = Path(checkpoint).absolute()  # "best.pt" given inside <run_dir>/checkpoints has a run too
    record_file = path.parent.parent / RUN_ID_FILE
    if path.parent.name != "checkpoints" or not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text())
        run_id = str(record["run_id"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        LOG.warning(f"{record_file}: not an MLflow run record ({type(exc).__name__}: {exc}); the export is not tracked")
        return None
    uri = record.get("tracking_uri") or track_settings(str(record_file.parent), "").uri
    return {"tracking_uri": uri, "experiment_id": str(record.get("experiment_id", "")), "run_id": run_id}


def export_files(report: dict[str, Any]) -> list[Path]:
    """The model files an export report names that exist: the ``.onnx`` (or OpenVINO ``.xml`` and its
    ``.bin``) and a kept INT8 ``.onnx``."""
    output = Path(report["output"])
    files = [output, output.with_suffix(".bin")] if output.suffix.lower() == ".xml" else [output]
    int8 = report.get("int8") or {}
    if int8.get("output") and int8.get("gate") != "refused":
        files.append(Path(int8["output"]))
    return [path for path in files if path.is_file()]


def log_export(checkpoint: str | os.PathLike, report: dict[str, Any]) -> Optional[str]:
    """Add an export of ``checkpoint`` to the MLflow run that trained it (:func:`tracked_run_record`): its
    model files (:func:`export_files`) and ``report`` as ``<model stem>.report.json``, under ``export/``.

    The run is reopened through ``MlflowClient`` by its id: no new run, its status stays as it is. Returns
    the run's id, or None when the checkpoint's run is not tracked, MLflow is not installed (one INFO line)
    or the store cannot be written (one warning; the exported files are in place all the same).
    """
    record = tracked_run_record(checkpoint)
    if record is None:
        return None
    run_id, uri = record["run_id"], record["tracking_uri"]
    if importlib.util.find_spec("mlflow") is None:
        LOG.info(f"MLflow is not installed: the export is not added to the run {run_id} that trained {checkpoint}")
        return None
    files = export_files(report)
    try:
        from mlflow.tracking import MlflowClient

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
            client = MlflowClient(tracking_uri=uri)
            for path in files:
                client.log_artifact(run_id, str(path), EXPORT_ARTIFACTS)
            stem = Path(report["output"]).stem
            client.log_text(run_id, dumps_json(report, indent=2), f"{EXPORT_ARTIFACTS}/{stem}.report.json")
    except Exception as exc:  # the export itself succeeded; the store being gone must not undo it
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        LOG.warning(f"MLflow: could not add the export to run {run_id} at {uri} ({type(exc).__name__}: {reason})")
        return None
    LOG.info(f"added {', '.join(p.name for p in files)} and the export report to MLflow run {run_id} ({uri})")
    return run_id
