"""``detect-ft demo``: the whole job on real photos, each step a plain ``detect-ft`` command.

1. takes the raccoon photos that ship in ``datasets/raccoon-small`` (``--synthetic``: writes a synthetic
   shapes dataset instead, with ``configs/demo_shapes.yaml``);
2. ``detect-ft train``: fine-tunes the config's model, SSDLite on an EfficientNet-Lite0 from its ImageNet
   weights (installed offline by the ``pretrained`` extra); where a config asks for pretrained weights
   that are not available here, it trains from random initialisation and says so in one line;
3. ``detect-ft eval``: the mAP table, metrics JSON and plots;
4. ``detect-ft export``: ONNX with the PyTorch parity check;
5. ``detect-ft predict``: the ONNX model through the torch-free edge runtime on validation photos that
   training never saw, keeping detections above the F1-optimal confidence validation found (stored in the
   checkpoint and the ONNX metadata);
6. writes ``<output.dir>/report.md``.

Each command is printed before it runs, so a user can rerun any step alone.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from pathlib import Path

HELP = "run the whole job on real photos: fine-tune from ImageNet, evaluate, export, predict, write a report"
REAL_CONFIG, SYNTHETIC_CONFIG = "configs/demo.yaml", "configs/demo_shapes.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=None, help=f"demo config (default {REAL_CONFIG}; --synthetic: {SYNTHETIC_CONFIG})"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides for every step")
    parser.add_argument("--predict-images", type=int, default=6, help="validation images the ONNX model predicts")
    synthetic = parser.add_argument_group("synthetic shapes instead of photos")
    synthetic.add_argument("--synthetic", action="store_true", help="generate shapes data (faster, no photos)")
    synthetic.add_argument("--data", default="data/demo", help="where the synthetic dataset is written (reused)")
    synthetic.add_argument("--train-images", type=int, default=480)
    synthetic.add_argument("--val-images", type=int, default=80)
    synthetic.add_argument("--image-size", type=int, default=128, help="side of the square synthetic images")
    synthetic.add_argument("--classes", default="circle,square,triangle", help="comma-separated synthetic shapes")


def run(args: argparse.Namespace) -> int:
    from detect_ft.cli import eval_cmd, export_cmd, predict_cmd, train_cmd
    from detect_ft.cli.common import run_command
    from detect_ft.cli.demo_report import write_report
    from detect_ft.config.schema import load_config

    started = time.perf_counter()
    config = args.config or (SYNTHETIC_CONFIG if args.synthetic else REAL_CONFIG)
    overrides = _synthetic_data(args) if args.synthetic else []
    # The demo owns its run directory: a second demo replaces the first (eval/export/predict read it back).
    overrides += ["output.overwrite=true", *args.overrides]
    cfg = load_config(config, overrides)
    overrides += _weights_fallback(cfg)
    run_dir = Path(cfg.output.dir)
    photos = _prediction_inputs(cfg, args.predict_images, run_dir / "predict_input")

    best = run_dir / "checkpoints" / "best.pt"
    onnx_path = run_dir / "model.onnx"
    steps = [
        ("train", [config, *overrides]),
        ("eval", [config, *overrides, "--weights", str(best), "--json", str(run_dir / "eval" / "metrics.json")]),
        ("export", [str(best), "--output", str(onnx_path), "--json", str(run_dir / "export.json")]),
        ("predict", [str(onnx_path), str(photos), "--output", str(run_dir / "predictions")]),
    ]
    modules = {"train": train_cmd, "eval": eval_cmd, "export": export_cmd, "predict": predict_cmd}
    seconds: dict[str, float] = {}
    for name, argv in steps:
        print(f"\n== {name}: detect-ft {name} {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        code = run_command(name, modules[name], argv)
        seconds[name] = time.perf_counter() - start
        if code != 0:
            print(f"demo stopped: step '{name}' exited with code {code}")
            return code
    report = write_report(run_dir, steps=steps, seconds=seconds, total_seconds=time.perf_counter() - started)
    print(
        f"\n== done in {time.perf_counter() - started:.0f} s "
        f"(train + eval + export + predict: {sum(seconds.values()):.0f} s); report: {report}"
    )
    return 0


def _synthetic_data(args: argparse.Namespace) -> list[str]:
    """Write the synthetic dataset (deterministic, seed 0) and return the overrides that point at it."""
    from detect_ft.data.synthetic import make_synthetic_dataset

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    data = Path(args.data)
    print(
        f"== synthetic data: {args.train_images} train, {args.val_images} val images of {args.image_size} px "
        f"with {', '.join(classes)} -> {data}"
    )
    make_synthetic_dataset(
        data / "shapes",
        num_train=args.train_images,
        num_val=args.val_images,
        image_size=args.image_size,
        classes=classes,
        seed=0,
    )
    return [f"data.root={data / 'shapes'}", f"data.classes=[{','.join(classes)}]"]


def _prediction_inputs(cfg, count: int, folder: Path) -> Path:
    """PNG copies of the first ``count`` validation images (never trained on), for the predict step; PNG so
    that their annotated pictures are written losslessly."""
    import cv2

    from detect_ft.data.load import load_split
    from detect_ft.utils.errors import DetectFTError

    d = cfg.data
    if not d.val:
        raise DetectFTError(f"the demo predicts on validation images; set data.val in {cfg.output.dir}'s config")
    records, _ = load_split(format=d.format, root=d.root, split=d.val, images=d.images, classes=list(d.classes) or None)
    if folder.exists():
        shutil.rmtree(folder)  # the demo's own folder inside its run directory
    folder.mkdir(parents=True)
    for record in records.records[:count]:
        image = cv2.imread(record.image_path)
        if image is not None:
            cv2.imwrite(str(folder / f"{Path(record.image_path).stem}.png"), image)
    return folder


def _weights_fallback(cfg) -> list[str]:
    """``model.weights=none`` when the config's pretrained weights are neither installed, cached nor
    downloadable, said in one line; the report then says the run started from random initialisation."""
    from detect_ft.models import MODELS
    from detect_ft.models.timm_backbone import create_body, imagenet_state_dict, lite_package_installed
    from detect_ft.models.weights import fetch_state_dict
    from detect_ft.utils.errors import WeightsError

    spec = MODELS[cfg.model.name]
    try:
        if cfg.model.weights == "imagenet" and spec.timm_backbone:
            backbone = cfg.model.backbone or spec.timm_backbone
            if not lite_package_installed(backbone):  # the package is the offline source; else try the rest
                imagenet_state_dict(backbone, create_body(backbone))
        elif cfg.model.weights == "coco" and spec.coco_weights is not None:
            fetch_state_dict(spec.coco_weights)
    except WeightsError as exc:
        print(f"pretrained weights unavailable, training from random initialisation (model.weights=none): {exc}")
        return ["model.weights=none"]
    return []
