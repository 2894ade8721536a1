"""``detect-ft demo``: the whole job on synthetic data, each step a plain ``detect-ft`` command.

1. writes a deterministic synthetic shapes dataset (COCO JSON) and a few held-out images;
2. ``detect-ft train``: fine-tunes the config's model, from torchvision's COCO weights when they are cached
   or downloadable, else from random initialisation (said in one line);
3. ``detect-ft eval``: the mAP table, metrics JSON and plots;
4. ``detect-ft export``: ONNX with the PyTorch parity check;
5. ``detect-ft predict``: the ONNX model through the torch-free edge runtime on the held-out images;
6. writes ``<output.dir>/report.md``.

Each command is printed before it runs, so a user can rerun any step alone.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

HELP = "run the whole job on synthetic data: generate, fine-tune, evaluate, export, predict, write a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/demo.yaml", help="demo config (default configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides for every step")
    parser.add_argument("--data", default="data/demo", help="where the synthetic dataset is written (reused)")
    parser.add_argument("--train-images", type=int, default=480)
    parser.add_argument("--val-images", type=int, default=80)
    parser.add_argument("--heldout-images", type=int, default=6, help="images never seen in training or validation")
    parser.add_argument("--image-size", type=int, default=128, help="side of the square synthetic images")
    parser.add_argument("--classes", default="circle,square,triangle", help="comma-separated synthetic shapes")


def run(args: argparse.Namespace) -> int:
    from detect_ft.cli.main import main as detect_ft
    from detect_ft.config import load_config
    from detect_ft.data.synthetic import make_synthetic_dataset
    from detect_ft.cli.demo_report import write_report

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    data = Path(args.data)
    # The demo owns its run directory: a second demo replaces the first (eval/export/predict read it back).
    overrides = [f"data.root={data / 'shapes'}", f"data.classes=[{','.join(classes)}]", "output.overwrite=true",
                 *args.overrides]  # fmt: skip
    cfg = load_config(args.config, overrides)
    run_dir = Path(cfg.output.dir)
    started = time.perf_counter()

    print(f"== synthetic data: {args.train_images} train, {args.val_images} val, {args.heldout_images} held-out "
          f"images of {args.image_size} px with {', '.join(classes)} -> {data}")  # fmt: skip
    size = args.image_size
    make_synthetic_dataset(data / "shapes", num_train=args.train_images, num_val=args.val_images, image_size=size,
                           classes=classes, seed=0)  # fmt: skip
    heldout = _png_copies(make_synthetic_dataset(data / "heldout", num_train=0, num_val=args.heldout_images,
                                                 image_size=size, classes=classes, seed=1) / "images")  # fmt: skip
    overrides += _weights_fallback(cfg.model.name, cfg.model.weights)

    best = run_dir / "checkpoints" / "best.pt"
    onnx_path = run_dir / "model.onnx"
    steps = [
        ("train", ["train", args.config, *overrides]),
        ("eval", ["eval", args.config, *overrides, "--weights", str(best), "--json", str(run_dir / "eval" / "metrics.json")]),
        ("export", ["export", str(best), "--output", str(onnx_path), "--json", str(run_dir / "export.json")]),
        ("predict", ["predict", str(onnx_path), str(heldout), "--output",
                     str(run_dir / "predictions"), "--conf", "0.3"]),
    ]  # fmt: skip
    seconds: dict[str, float] = {}
    for name, argv in steps:
        print(f"\n== {name}: detect-ft {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        code = detect_ft(argv)
        seconds[name] = time.perf_counter() - start
        if code != 0:
            print(f"demo stopped: step '{name}' exited with code {code}")
            return code
    report = write_report(run_dir, steps=steps, seconds=seconds, total_seconds=time.perf_counter() - started)
    print(f"\n== done in {time.perf_counter() - started:.0f} s "
          f"(train + eval + export + predict: {sum(seconds.values()):.0f} s); report: {report}")  # fmt: skip
    return 0


def _png_copies(folder: Path) -> Path:
    """PNG copies of the held-out JPEGs, so that their annotated pictures are written losslessly."""
    import cv2

    target = folder.parent / "png"
    target.mkdir(exist_ok=True)
    for jpeg in sorted(folder.glob("*.jpg")):
        cv2.imwrite(str(target / f"{jpeg.stem}.png"), cv2.imread(str(jpeg)))
    return target


def _weights_fallback(model_name: str, weights: str) -> list[str]:
    """``model.weights=none`` when COCO weights are asked for but neither cached nor downloadable."""
    if weights != "coco":
        return []
    from detect_ft.errors import WeightsError
    from detect_ft.models import MODELS
    from detect_ft.models.weights import fetch_state_dict

    try:
        fetch_state_dict(MODELS[model_name].coco_weights)
    except WeightsError:
        print(f"COCO weights for {model_name} are not cached and cannot be downloaded: training from random "
              f"initialisation (model.weights=none)")  # fmt: skip
        return ["model.weights=none"]
    return []
