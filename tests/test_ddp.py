"""DDP on CPU: two gloo processes train together, end with identical weights, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from helpers import make_tiny_data, tiny_config, tiny_overrides

REPO = Path(__file__).resolve().parent.parent
DDP_OVERRIDES = ["train.epochs=2", "train.device=cpu", "train.ema=true"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data_dir: Path, tmp: Path) -> None:
    """One rank: what torchrun would set up, then train() with a hook that saves this rank's weights."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from detect_ft.engine import trainer
    from detect_ft.engine.hooks import Hook

    class Spy(Hook):
        """Runs on every rank after the epoch's end-of-epoch syncs: the state to compare."""

        def after_epoch(self, run) -> None:
            record = {
                "state": run.model.state_dict(),
                "stats": run.stats,
                "ddp": isinstance(run.train_model, torch.nn.parallel.DistributedDataParallel),
            }
            torch.save(record, tmp / "spy" / f"rank{rank}_epoch{run.epoch}.pt")

    # Each rank gets its own output.dir: anything rank 1 wrote would show up in its folder.
    trainer.train(tiny_config(data_dir, tmp / f"out{rank}", *DDP_OVERRIDES), progress=False, hooks=[Spy()])


@pytest.mark.slow
def test_two_gloo_ranks_train_alike_and_only_rank0_writes(tmp_path) -> None:
    data_dir = make_tiny_data(tmp_path / "data")
    (tmp_path / "spy").mkdir()
    mp.spawn(_worker, args=(2, _free_port(), data_dir, tmp_path), nprocs=2, join=True)

    for epoch in (0, 1):
        r0 = torch.load(tmp_path / "spy" / f"rank0_epoch{epoch}.pt", weights_only=True)
        r1 = torch.load(tmp_path / "spy" / f"rank1_epoch{epoch}.pt", weights_only=True)
        assert r0["ddp"] and r1["ddp"]
        assert r0["state"].keys() == r1["state"].keys()
        for key, value in r0["state"].items():
            assert torch.equal(value, r1["state"][key]), key
        # Reduced over ranks: the same loss and throughput on both, for 2 ranks x 2 batches x 2 images.
        assert r0["stats"]["loss"] == r1["stats"]["loss"] and r0["stats"]["images"] == 8
    assert not (tmp_path / "out1").exists()
    out = tmp_path / "out0"
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt", "plots/loss.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["loss"] == pytest.approx(r0["stats"]["loss"])
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    final = torch.load(tmp_path / "spy" / "rank0_epoch1.pt", weights_only=True)["state"]
    assert all(torch.equal(final[k], v) for k, v in last["ema"]["training_model"].items())


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
@pytest.mark.parametrize(
    "extra", [[], ["train.time_budget=20s"], ["train.batch_size=1"]], ids=["epochs", "time_budget", "batch_of_one"]
)
def test_torchrun_command_line(tmp_path, extra) -> None:
    """The documented launch: torchrun --standalone --nproc_per_node 2 -m detect_ft train CONFIG; with a
    time budget, rank 0 plans and both ranks follow (no rank waits for another at a different epoch); each
    rank's batch of one trains (ssdlite's BatchNorm on 1x1 maps would refuse a lone image)."""
    data_dir = make_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    sections: dict = {}
    for text in tiny_overrides(data_dir, out) + ["train.device=cpu", *extra]:
        key, value = text.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sections))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "detect_ft", "train", str(config), "--no-progress"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "metrics.jsonl").is_file()
    assert "training finished" in result.stdout
    if "train.time_budget=20s" in extra:
        assert "time budget 20s:" in result.stdout
