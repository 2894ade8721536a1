"""``train.track=mlflow``: a tiny run recorded in MLflow and read back through MLflow's own client; the
store and experiment chosen; the one error when MLflow is not installed; an export of the run's checkpoint
added to the same run; a stale ``mlflow.json`` removed by an untracked rerun."""

from __future__ import annotations

import json
import os
import socket
import textwrap
from pathlib import Path

import pytest
from helpers import make_tiny_data, run_python, tiny_config

from detect_ft.api import Detector
from detect_ft.api.options import dotted_overrides
from detect_ft.engine.tracking import (
    export_files,
    flat_params,
    log_export,
    row_metrics,
    track_settings,
    tracked_run_record,
)
from detect_ft.engine.trainer import train


@pytest.fixture(scope="module")
def tracked_run(tiny_data, tmp_path_factory):
    """Two epochs of the tiny model with train.track=mlflow in the default store; (run_dir, the MLflow run, client)."""
    pytest.importorskip("mlflow", reason="the tracking extra: pip install 'detect-ft[track]'")
    from mlflow.tracking import MlflowClient

    out = tmp_path_factory.mktemp("tracked") / "runs" / "exp"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        run_dir = train(tiny_config(tiny_data, out, "train.track=mlflow", "train.epochs=2"), progress=False)
    store = out.parent / "mlflow.db"
    assert store.is_file(), "the default store is a SQLite file beside the run folders"
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    record = json.loads((run_dir / "mlflow.json").read_text())
    return run_dir, client.get_run(record["run_id"]), client


def test_tracked_run_has_config_tags_and_status(tracked_run, tiny_data):
    run_dir, run, client = tracked_run
    params = run.data.params
    assert params["train.lr"] == "0.01" and params["train.epochs"] == "2" and params["train.track"] == "mlflow"
    assert params["model.name"] == "ssdlite320_mobilenet_v3_large" and params["output.dir"] == str(run_dir)
    assert params["model.min_size"] == "128" and params["train.milestones"] == "[]"
    tags = run.data.tags
    assert (tags["model"], tags["weights"], tags["dataset"]) == (
        "ssdlite320_mobilenet_v3_large",
        "none",
        tiny_data.name,
    )
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert client.get_experiment(run.info.experiment_id).name == tiny_data.name


def test_tracked_run_has_every_epoch_and_validation(tracked_run):
    run_dir, run, client = tracked_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "map", "map50", "lr", "img_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r[key])) for r in rows], key
    components = rows[0]["losses"]
    assert components and {f"losses/{name}" for name in components} <= set(run.data.metrics)
    for name, value in components.items():
        assert client.get_metric_history(run.info.run_id, f"losses/{name}")[0].value == pytest.approx(value)
    assert "epoch" not in run.data.metrics and "note" not in run.data.metrics


def test_tracked_run_has_artifacts(tracked_run):
    run_dir, run, client = tracked_run
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.jsonl", "plots", "checkpoints"} <= top
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {"plots/loss.png", "plots/map.png"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    local = client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(run_dir.parent / "download"))
    assert open(local, "rb").read() == (run_dir / "checkpoints" / "best.pt").read_bytes()


def test_store_and_experiment_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = track_settings(str(tmp_path / "runs" / "exp"), str(tmp_path / "birds"))
    assert default.uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert default.artifact_root == tmp_path / "runs" / "mlartifacts" and default.experiment == "birds"
    assert track_settings("runs/exp", "").experiment == "detect-ft"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    from_env = track_settings("runs/exp", "", experiment="mine")
    assert (from_env.uri, from_env.artifact_root, from_env.experiment) == ("http://127.0.0.1:5000", None, "mine")
    given = track_settings("runs/exp", "", uri=f"sqlite:///{tmp_path / 'db' / 'x.db'}")
    assert given.uri == f"sqlite:///{tmp_path / 'db' / 'x.db'}", "train.track_uri wins"
    assert given.artifact_root == tmp_path / "db" / "mlartifacts", "a SQLite store's artifacts stay beside it"


def test_params_and_metrics_are_flat_and_finite():
    assert flat_params({"train": {"lr": 0.01, "milestones": [8, 11]}, "x": {"y": {"z": None}}}) == {
        "train.lr": "0.01",
        "train.milestones": "[8, 11]",
        "x.y.z": "None",
    }
    assert len(flat_params({"data": {"classes": ["c"] * 3000}})["data.classes"]) == 6000
    row = {"epoch": 3, "loss": 1.5, "map": None, "note": "no boxes", "skipped_steps": 0, "lr": float("nan"), "ok": True}
    row["losses"] = {"bbox": 0.5, "cls": None}
    assert row_metrics(row) == {"loss": 1.5, "skipped_steps": 0.0, "losses/bbox": 0.5}


def test_detector_train_track_is_the_config_key():
    assert dotted_overrides({"track": "mlflow", "track_uri": "sqlite:///m.db"}) == {
        "train.track": "mlflow",
        "train.track_uri": "sqlite:///m.db",
    }


def test_missing_mlflow_is_one_error_before_training(tiny_data, tmp_path):
    # As helpers.BLOCK_TORCH does for torch: a None entry in sys.modules makes `import mlflow` fail.
    code = "import sys; sys.modules['mlflow'] = None\n" + textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, "tests")
        from helpers import tiny_config
        from detect_ft.engine.trainer import train
        from detect_ft.utils.errors import DetectFTError
        try:
            train(tiny_config({str(tiny_data)!r}, {str(tmp_path / "runs" / "exp")!r}, "train.track=mlflow"))
        except DetectFTError as exc:
            print("ERROR:", exc)
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(lines) == 1 and "pip install 'detect-ft[track]'" in lines[0] and "train.track=mlflow" in lines[0]
    assert not (tmp_path / "runs").exists(), "nothing is written before the error"


def test_unusable_store_is_one_error_before_the_run_folder(tiny_data, tmp_path):
    pytest.importorskip("mlflow", reason="the tracking extra: pip install 'detect-ft[track]'")
    from detect_ft.utils.errors import DetectFTError

    cfg = tiny_config(tiny_data, tmp_path / "runs" / "exp", "train.track=mlflow", "train.track_uri=nosuchscheme://x")
    with pytest.raises(DetectFTError, match=r"^train.track=mlflow: cannot record into nosuchscheme://x \(") as caught:
        train(cfg, progress=False)
    assert "\n" not in str(caught.value) and "MLFLOW_TRACKING_URI" in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_export_is_added_to_the_run_that_trained_the_checkpoint(tracked_run, tmp_path):
    run_dir, run, client = tracked_run
    runs_before = client.search_runs([run.info.experiment_id])
    report = Detector.load(run_dir / "checkpoints" / "best.pt").export(tmp_path / "model.onnx")
    assert report["parity"] is not None
    after = client.get_run(run.info.run_id)
    assert len(client.search_runs([run.info.experiment_id])) == len(runs_before), "no new run"
    assert (after.info.status, after.info.end_time) == ("FINISHED", run.info.end_time), "the run is not reopened"
    exported = {a.path for a in client.list_artifacts(run.info.run_id, "export")}
    assert exported == {"export/model.onnx", "export/model.report.json"}
    local = Path(client.download_artifacts(run.info.run_id, "export", str(tmp_path / "download")))
    assert (local / "model.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()
    logged = json.loads((local / "model.report.json").read_text())
    assert logged["output"] == str(tmp_path / "model.onnx") and logged["parity"]["images"] == report["parity"]["images"]


def _tracked_checkpoint(folder: Path, record: dict) -> tuple[Path, dict]:
    """``<folder>/checkpoints/best.pt`` (a stand-in file) beside ``mlflow.json`` holding ``record``, and the
    report of an export of it to ``<folder>/m.onnx`` (another stand-in)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.pt").write_bytes(b"weights")
    (folder / "mlflow.json").write_text(json.dumps(record))
    (folder / "m.onnx").write_bytes(b"onnx")
    return folder / "checkpoints" / "best.pt", {"output": str(folder / "m.onnx"), "parity": None}


def test_an_unreachable_store_is_one_warning_and_the_export_stands(tmp_path, caplog):
    pytest.importorskip("mlflow", reason="the tracking extra: pip install 'detect-ft[track]'")
    checkpoint, report = _tracked_checkpoint(tmp_path / "exp", {"tracking_uri": "nosuchscheme://x", "run_id": "r1"})
    caplog.set_level("INFO", logger="detect_ft")
    assert log_export(checkpoint, report) is None
    problems = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(problems) == 1 and "could not add the export to run r1 at nosuchscheme://x" in problems[0].message
    assert (tmp_path / "exp" / "m.onnx").read_bytes() == b"onnx"


def test_the_run_record_of_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    checkpoint, _ = _tracked_checkpoint(tmp_path / "runs" / "exp", {"experiment_id": "1", "run_id": "r1"})
    # a record without its tracking URI: the store training would have chosen by default
    default = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert tracked_run_record(checkpoint) == {"tracking_uri": default, "experiment_id": "1", "run_id": "r1"}
    (tmp_path / "elsewhere.pt").write_bytes(b"weights")
    assert tracked_run_record(tmp_path / "elsewhere.pt") is None
    (tmp_path / "runs" / "exp" / "mlflow.json").unlink()
    assert tracked_run_record(checkpoint) is None


def test_the_files_of_an_export(tmp_path):
    for name in ("m.xml", "m.bin", "m.onnx", "m.int8.onnx"):
        (tmp_path / name).write_bytes(b"model")
    assert export_files({"output": str(tmp_path / "m.xml")}) == [tmp_path / "m.xml", tmp_path / "m.bin"]
    int8 = {"output": str(tmp_path / "m.int8.onnx"), "gate": "passed"}
    assert export_files({"output": str(tmp_path / "m.onnx"), "int8": int8}) == [
        tmp_path / "m.onnx",
        tmp_path / "m.int8.onnx",
    ]
    refused = {**int8, "gate": "refused"}  # a file left from an earlier export is not this export's
    assert export_files({"output": str(tmp_path / "m.onnx"), "int8": refused}) == [tmp_path / "m.onnx"]


def test_export_without_mlflow_is_one_info_line(tmp_path):
    checkpoint, report = _tracked_checkpoint(tmp_path / "exp", {"tracking_uri": "sqlite:///x.db", "run_id": "r1"})
    code = "import sys; sys.modules['mlflow'] = None\n" + textwrap.dedent(
        f"""
        import logging
        logging.basicConfig(level=logging.DEBUG, format="LOG %(name)s %(levelname)s %(message)s")
        from detect_ft.engine.tracking import log_export
        print("RESULT", log_export({str(checkpoint)!r}, {report!r}))
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RESULT None" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("LOG detect_ft")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("LOG detect_ft.engine.tracking INFO MLflow is not installed: the export is not added")


def test_an_untracked_overwrite_removes_the_replaced_runs_mlflow_record(tiny_data, tmp_path):
    out = tmp_path / "runs" / "exp"
    checkpoint, _ = _tracked_checkpoint(out, {"tracking_uri": "sqlite:///x.db", "run_id": "old"})
    (out / "metrics.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("mine")
    run_dir = train(tiny_config(tiny_data, out, "output.overwrite=true", "train.epochs=1"), progress=False)
    assert run_dir == out and not (out / "mlflow.json").exists()
    assert tracked_run_record(checkpoint) is None, "an export of the new checkpoint is not added to the old run"
    assert (out / "notes.txt").read_text() == "mine", "only what detect-ft wrote is removed"


def _ddp_worker(rank: int, port: int, data_dir: Path, tmp: Path) -> None:
    """One of two gloo ranks, each with its own output.dir, both told to track into one store."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import torch

    torch.set_num_threads(1)
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    overrides = ("train.device=cpu", "train.track=mlflow", f"train.track_uri={store}", "train.track_experiment=ddp")
    train(tiny_config(data_dir, tmp / f"out{rank}", *overrides), progress=False)


@pytest.mark.slow
def test_only_rank0_tracks_under_ddp(tmp_path):
    pytest.importorskip("mlflow", reason="the tracking extra: pip install 'detect-ft[track]'")
    import torch.multiprocessing as mp
    from mlflow.tracking import MlflowClient

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    data_dir = make_tiny_data(tmp_path / "data")
    mp.spawn(_ddp_worker, args=(port, data_dir, tmp_path), nprocs=2, join=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["output.dir"] == str(tmp_path / "out0")
    assert runs[0].info.status == "FINISHED" and not (tmp_path / "out1").exists()
    assert runs[0].info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
