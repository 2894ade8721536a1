"""Training speed with one other busy process on the cores, for torch's OpenMP defaults and detect-ft's.

    python tools/bench_contention.py                                # torch's default, then detect-ft's
    python tools/bench_contention.py --policies torch,detect-ft,one-thread --iters 5

Each policy runs in a fresh Python process, because libgomp reads ``OMP_WAIT_POLICY`` once, when torch
loads:

- ``torch``: torch imported before detect_ft, so its OpenMP threads keep libgomp's default (spin for a
  while at the end of every parallel op, then sleep): what training did before detect-ft chose a policy.
- ``detect-ft``: detect_ft imported first, as ``detect-ft train``, ``tools/train.py`` and
  ``from detect_ft import Detector`` do: whatever detect-ft's default is.
- ``one-thread``: torch's default with ``torch.set_num_threads(1)``: what a thread count taken from the
  free cores would give while the other process runs.
- ``short-spin``: ``GOMP_SPINCOUNT=10000`` (about 0.1 ms of spinning before a thread sleeps, against
  libgomp's default 300000): a middle way between spinning and ``PASSIVE``.

``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` and ``OMP_NUM_THREADS`` are removed from the children's
environment so that every policy starts from the defaults. In each child, ``detect_ft.engine.trainer.train``
(the code ``detect-ft train`` runs) trains ``ssdlite320_efficientnet_lite0`` with its recipe (batch 16,
320 px, ImageNet weights offline when installed; ``--weights none`` otherwise) on the raccoon photos
(``../shared/datasets/raccoon-voc``, train + val, no validation) or, without them, on synthetic images.
Two runs of one epoch each: ``--warmup`` steps, then ``--iters`` timed steps quiet; the same again with
``--busy`` competing processes (a pure-Python busy loop each, one core) started after the warm-up steps
and stopped when the run ends (or after ``--busy-limit`` seconds, or when their parent is gone). img/s
is the images of the timed steps over their wall time (loader waits included). The ratio that matters
is busy / quiet of the same policy; ``quiet vs torch`` shows what a policy costs on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
# The shared datasets lie beside the main checkout (a worktree may sit one level deeper).
RACCOON = next(
    (p / "shared" / "datasets" / "raccoon-voc" for p in REPO.parents if (p / "shared" / "datasets").is_dir()),
    REPO.parent / "shared" / "datasets" / "raccoon-voc",
)
POLICIES = ("torch", "detect-ft", "one-thread", "short-spin")
CONDITIONS = ("quiet", "busy")
CLEARED_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
RESULT_TAG = "BENCH_CONTENTION_RESULT "
# One core busy until the time limit (argv[1] seconds) or until the process that started it is gone.
SPIN = (
    "import os, sys, time\n"
    "parent, end = os.getppid(), time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end and os.getppid() == parent:\n"
    "    for _ in range(100000):\n"
    "        pass\n"
)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", default="torch,detect-ft", help=f"comma-separated, from {', '.join(POLICIES)}")
    parser.add_argument("--iters", type=int, default=5, help="timed training steps per condition")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--model", default="ssdlite320_efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="model.weights (imagenet offline, or none)")
    parser.add_argument("--batch", type=int, default=0, help="train.batch_size (0: the model's recipe, 16 here)")
    parser.add_argument("--root", default=str(RACCOON), help="a VOC folder with train/val lists (else synthetic)")
    parser.add_argument("--conditions", default="quiet,busy", help="comma-separated, from quiet, busy")
    parser.add_argument("--busy", type=int, default=1, help="competing busy processes in the busy condition")
    parser.add_argument("--busy-limit", type=float, default=600.0, help="seconds after which a busy loop ends")
    parser.add_argument("--child", choices=POLICIES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(RESULT_TAG + json.dumps(run_policy(args)), flush=True)
        return 0
    if args.warmup < 1 or args.iters < 1 or args.busy < 1:
        parser.error("--warmup, --iters and --busy: at least 1 (the busy processes start after the warm-up)")
    policies, conditions = _split(args.policies, POLICIES), _split(args.conditions, CONDITIONS)
    if not policies or not conditions:
        parser.error(f"--policies: from {', '.join(POLICIES)}; --conditions: from {', '.join(CONDITIONS)}")
    cleared = [name for name in CLEARED_ENV if name in os.environ]
    if cleared:
        print(f"(removed {', '.join(cleared)} from the children's environment: every policy starts from defaults)")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    results = [run_child(policy, argv or sys.argv[1:]) for policy in policies]
    print(
        f"\n{started}, {os.cpu_count()} CPU cores, load average {_load(load_before)} before, {_load()} after; "
        f"{args.model} (weights {args.weights}), batch {args.batch or 'of the recipe'}, {args.warmup} warm-up + "
        f"{args.iters} timed steps per condition, {args.busy} busy process(es)"
    )
    print(format_table(results))
    return 0


def run_child(policy: str, argv: list[str]) -> dict[str, Any]:
    """Run one policy in a fresh interpreter (its environment cleared of the OpenMP variables)."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", policy]
    print(f"policy {policy}: running ...", flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"policy {policy}: the child process failed (exit code {done.returncode})")
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    figures = ", ".join(f"{c} {result[c]:.2f} img/s" for c in CONDITIONS if c in result)
    print(f"policy {policy}: {figures}", flush=True)
    return result


def run_policy(args: argparse.Namespace) -> dict[str, Any]:
    """In the child: set up torch as ``args.child`` says, train quiet and busy, return the figures."""
    if args.child == "detect-ft":
        import detect_ft  # noqa: F401  (first, as detect-ft's entry points do, so its defaults apply)
    if args.child == "short-spin":
        os.environ["GOMP_SPINCOUNT"] = "10000"
    # what libgomp reads as torch loads, next
    openmp = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    import torch

    if args.child == "one-thread":
        torch.set_num_threads(1)

    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench_contention_") as tmp:
        images = (args.warmup + args.iters) * (args.batch or 16)
        data = data_overrides(Path(args.root), Path(tmp) / "data", images)
        for condition in _split(args.conditions, CONDITIONS):
            figures[condition] = train_and_time(args, data, Path(tmp) / condition, busy=condition == "busy")
    return {
        "policy": args.child,
        "model": args.model,
        "threads": torch.get_num_threads(),
        "openmp": openmp or "defaults",
        "data": "raccoon-voc" if "data.format=voc" in data else "synthetic",
        **figures,
    }


def data_overrides(root: Path, synthetic_dir: Path, images: int) -> list[str]:
    """The ``data.*`` overrides: the VOC folder ``root`` (train + val lists) if it is there, else
    ``images`` synthetic 320x320 images written to ``synthetic_dir``."""
    if (root / "ImageSets" / "Main" / "trainval.txt").is_file():
        return [f"data.root={root}", "data.format=voc", "data.train=trainval", "data.val=", "data.classes=[raccoon]"]
    from detect_ft.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(synthetic_dir, num_train=images, num_val=0, image_size=320, seed=0)
    return [f"data.root={synthetic_dir}", "data.format=coco", "data.train=train.json", "data.val="]


def train_and_time(args: argparse.Namespace, data: list[str], out_dir: Path, busy: bool) -> float:
    """img/s of ``args.iters`` steps of ``detect-ft train`` after ``args.warmup`` steps; ``busy``: with a
    competing busy process from the end of the warm-up to the end of the run."""
    from detect_ft.config.schema import load_config
    from detect_ft.engine.trainer import train

    overrides = [
        *data,
        f"model.name={args.model}",
        f"model.weights={args.weights}",
        *([f"train.batch_size={args.batch}"] if args.batch else []),
        "train.device=cpu",
        "train.epochs=1",
        f"train.max_iters_per_epoch={args.warmup + args.iters}",
        f"output.dir={out_dir}",
    ]
    timer = StepTimer(args.warmup, args.busy if busy else 0, args.busy_limit)
    train(load_config(None, overrides), progress=False, hooks=[timer])
    return timer.images_per_second(args.iters)


class StepTimer:
    """A training hook: the end time and image count of every step, and the busy process's life."""

    def __init__(self, warmup: int, busy: int, busy_limit: float) -> None:
        self.warmup, self.busy, self.busy_limit = warmup, busy, busy_limit
        self.ends: list[float] = []
        self.images: list[int] = []
        self.spinners: list[subprocess.Popen] = []

    def before_train(self, run) -> None:
        make_loader = run.make_loader
        run.make_loader = lambda epoch: self._counting(make_loader(epoch))

    def before_epoch(self, run) -> None:
        pass

    def before_step(self, run) -> None:
        pass

    def after_epoch(self, run) -> None:
        pass

    def _counting(self, loader):
        for images, targets in loader:
            self.images.append(len(images))
            yield images, targets

    def after_step(self, run) -> None:
        self.ends.append(time.perf_counter())
        if run.step + 1 == self.warmup:
            command = [sys.executable, "-c", SPIN, str(self.busy_limit)]
            self.spinners = [subprocess.Popen(command) for _ in range(self.busy)]

    def after_train(self, run) -> None:
        for spinner in self.spinners:
            spinner.kill()
            spinner.wait()

    def images_per_second(self, iters: int) -> float:
        timed = self.ends[self.warmup - 1 :] if self.warmup else self.ends
        if len(timed) < iters + 1:
            raise SystemExit(f"only {len(self.ends)} steps trained; the data has too few batches for --iters {iters}")
        return sum(self.images[self.warmup : self.warmup + iters]) / (timed[iters] - timed[0])


def format_table(results: list[dict[str, Any]]) -> str:
    """A markdown table: img/s per policy and condition, busy / quiet, and both against torch's quiet."""
    torch_quiet = next((r.get("quiet") for r in results if r["policy"] == "torch"), None)

    def ratio(a: Optional[float], b: Optional[float]) -> str:
        return f"{a / b:.2f}" if a and b else "-"

    def speed(value: Optional[float]) -> str:
        return f"{value:.2f}" if value else "-"

    rows = [
        "| policy | threads | OpenMP environment at torch's load | data | quiet img/s | busy img/s | busy / quiet "
        "| quiet vs torch quiet | busy vs torch quiet |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        quiet, busy = r.get("quiet"), r.get("busy")
        rows.append(
            f"| {r['policy']} | {r['threads']} | {r['openmp']} | {r['data']} | {speed(quiet)} | {speed(busy)} | "
            f"{ratio(busy, quiet)} | {ratio(quiet, torch_quiet)} | {ratio(busy, torch_quiet)} |"
        )
    return "\n".join(rows)


def _split(text: str, allowed: tuple[str, ...]) -> list[str]:
    """The comma-separated names in ``text``; [] when one is not in ``allowed``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names if all(name in allowed for name in names) else []


def _load(values: Optional[tuple[float, float, float]] = None) -> str:
    return " ".join(f"{v:.1f}" for v in (values or os.getloadavg()))


if __name__ == "__main__":
    sys.exit(main())
