"""``detect-ft export CHECKPOINT --output MODEL.onnx``: ONNX export, verified against PyTorch, optional INT8.

The validation split comes from the checkpoint's own config unless ``--config`` names another; dotted
``key=value`` overrides apply to whichever config is used (e.g. ``export.max_map_drop=1.0``).
"""

from __future__ import annotations

import argparse

HELP = "export a checkpoint to ONNX, check it against PyTorch on the validation split, optionally INT8"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a detect-ft checkpoint (runs/<exp>/checkpoints/best.pt)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument("--output", required=True, metavar="MODEL.onnx", help="where to write the ONNX model")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: export.opset, 17)")
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="config whose data.val is the parity split (default: the checkpoint's config)")  # fmt: skip
    parser.add_argument("--no-verify", action="store_true", help="skip the PyTorch/onnxruntime parity check")
    parser.add_argument("--int8", action="store_true",
                        help="also write MODEL.int8.onnx (static INT8; refused when it loses more than "
                             "export.int8_max_map_drop AP points vs fp32 on the validation split)")  # fmt: skip
    parser.add_argument("--int8-keep-anyway", action="store_true",
                        help="keep MODEL.int8.onnx even when it fails the export.int8_max_map_drop gate (warns)")  # fmt: skip
    parser.add_argument("--json", default=None, metavar="OUT",
                        help="also write the export report (parity, mAPs, latencies) as JSON")  # fmt: skip
    parser.add_argument("--calib", default=None, metavar="CONFIG",
                        help="config whose data.train gives the INT8 calibration images (default: the one above)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from detect_ft.config import load_config
    from detect_ft.errors import ConfigError, DetectFTError
    from detect_ft.export.pipeline import Int8RefusedError, export_detector
    from detect_ft.export.quantize import Int8Options
    from detect_ft.models import load_detector

    model, meta = load_detector(args.checkpoint)
    cfg = (
        load_config(args.config, args.overrides)
        if args.config
        else _checkpoint_config(meta, args.overrides, args.checkpoint)
    )
    opset = args.opset if args.opset is not None else cfg.export.opset
    if not 11 <= opset <= 21:
        raise ConfigError(f"--opset {opset}: torchvision detectors export at opsets 11..21; use --opset 17")
    verify = cfg.export.verify and not args.no_verify
    class_names = list(meta["class_names"])
    val = None
    if verify:
        if not cfg.data.val:
            raise ConfigError(
                f"{args.config or args.checkpoint}: config key 'data.val' is empty, so there is no split for the "
                "parity check; pass --config CONFIG with data.val set, or --no-verify"
            )
        val = _split(cfg, cfg.data.val, class_names)
    if args.int8_keep_anyway and not args.int8:
        raise DetectFTError("--int8-keep-anyway only applies with --int8")
    calib = None
    if args.int8:
        calib_cfg = load_config(args.calib) if args.calib else cfg
        if not calib_cfg.data.train:
            raise ConfigError(f"{args.calib or args.config or args.checkpoint}: config key 'data.train' is empty; "
                              "INT8 calibration reads training images, pass --calib CONFIG with data.train set")  # fmt: skip
        calib = calibration_images(_split(calib_cfg, calib_cfg.data.train, class_names), calib_cfg.export.calib_images)
    ex = cfg.export
    int8_options = Int8Options(format=ex.int8_format, per_channel=ex.int8_per_channel, calibration=ex.int8_calibration,
                               reduce_range=ex.int8_reduce_range, ops=ex.int8_ops, exclude=tuple(ex.int8_exclude))  # fmt: skip
    try:
        report = export_detector(
            model, args.output, model_name=meta["model_name"], class_names=class_names,
            category_ids=meta.get("category_ids"), opset=opset, val_dataset=val,
            max_map_drop=cfg.export.max_map_drop, score_thresh=cfg.eval.score_thresh, backend=cfg.eval.backend,
            int8=args.int8, calib_images=calib, int8_options=int8_options,
            int8_max_map_drop=ex.int8_max_map_drop, int8_keep_anyway=args.int8_keep_anyway,
            extra_metadata={"source_checkpoint": str(args.checkpoint), "epoch": meta.get("epoch"),
                            "backbone": _backbone(meta["model_name"], cfg.model.backbone)}, progress=True,
        )  # fmt: skip
    except Int8RefusedError as exc:  # the fp32 model was written: show its report, then the one-line error
        _print_report(exc.report, args.json)
        raise DetectFTError(str(exc).replace("(int8_keep_anyway=True)", "with --int8-keep-anyway")) from None
    _print_report(report, args.json)
    return 0


def _print_report(report: dict, json_path) -> None:
    print(format_report(report))
    if json_path:
        from detect_ft.io import write_json_atomic

        write_json_atomic(json_path, report)
        print(f"wrote {json_path}")


def _backbone(model_name: str, configured: str):
    """The timm backbone of a timm-backbone model (None for torchvision's own backbones)."""
    from detect_ft.models import MODELS

    spec = MODELS.get(model_name)
    return (configured or spec.timm_backbone) if spec is not None and spec.timm_backbone else None


def _checkpoint_config(meta: dict, overrides: list[str], checkpoint: str):
    """The checkpoint's resolved config (a plain dict), re-checked, with ``overrides`` applied."""
    from detect_ft.config import config_from_dict
    from detect_ft.errors import ConfigError

    saved = meta.get("config") or {}
    if not isinstance(saved, dict):
        raise ConfigError(f"{checkpoint}: its 'config' entry is not a mapping; pass --config CONFIG")
    try:
        return config_from_dict(saved, overrides, source=f"checkpoint {checkpoint}")
    except ConfigError as exc:
        raise ConfigError(f"{checkpoint}: the saved config does not load ({exc}); pass --config CONFIG") from None


def _split(cfg, split: str, class_names: list[str]):
    from detect_ft.data.split import SplitSpec, load_checked_split

    dataset, _ = load_checked_split(SplitSpec.from_config(cfg.data), split, class_names, decode=True)
    return dataset


def calibration_images(dataset, count: int) -> list:
    """``count`` RGB uint8 images spread evenly over the split (the whole split when it is smaller)."""
    import numpy as np

    from detect_ft.data.image import read_image

    records = dataset.records
    index = np.unique(np.linspace(0, len(records) - 1, num=min(count, len(records))).round().astype(int))
    return [read_image(records[i].image_path, apply_orientation=records[i].apply_orientation) for i in index]


def format_report(report: dict) -> str:
    from detect_ft.evaluation.report import fmt, format_table

    lines = [f"exported {report['model_name']} (opset {report['opset']}) to {report['output']} "
             f"in {report['export_seconds']:.1f} s"]  # fmt: skip
    parity = report.get("parity")
    if parity is None:
        lines.append("parity check skipped (--no-verify)")
    else:
        det = parity["detections"]
        lines.append(
            f"parity on {parity['images']} validation images: {det['matched']}/{det['reference_detections']} "
            f"PyTorch detections matched (same label, IoU >= {det['iou_thresh']}), "
            f"max score diff {det['max_score_diff']:.2e}, max box diff {det['max_box_diff']:.2e} px"
        )
    rows = []
    if parity is not None:
        for name, key in (("pytorch", "torch"), ("onnx fp32", "onnx")):
            rows.append(_row(name, parity[key], fmt))
    int8 = report.get("int8")
    if int8 is not None:
        what = f"INT8: {int8.get('description', 'QDQ')}; {int8['calibration_images']} calibration images"
        if int8.get("gate") == "refused":
            lines.append(f"INT8 model REFUSED, {int8['output']} not written ({what})")
        else:
            lines.append(f"wrote {int8['output']} ({what})")
        if "map" in int8:
            rows.append(_row("onnx int8", int8, fmt))
    if rows:
        lines.append(format_table(["runtime", "mAP", "mAP50", "p50 ms", "p90 ms"], rows))
    if parity is not None:
        lines.append(f"ONNX mAP differs from PyTorch by {parity['map_diff_points']:+.2f} AP points")
    if int8 is not None:
        lines += _int8_lines(int8)
    return "\n".join(lines)


def _int8_lines(int8: dict) -> list[str]:
    """The INT8 gate and speed lines of the export report; the problems as loud WARNING lines."""
    lines = []
    gate, limit = int8.get("gate"), int8.get("max_map_drop")
    if gate == "not checked":
        lines.append("WARNING: the INT8 model was NOT CHECKED for accuracy: there is no validation split "
                     "(--no-verify or export.verify=false), so how much mAP it loses is unknown; export with a "
                     "validation split to gate it")  # fmt: skip
    elif gate is not None:
        diff = int8["map_diff_points"]
        lines.append(f"INT8 mAP differs from fp32 ONNX by {diff:+.2f} AP points "
                     f"(allowed drop: export.int8_max_map_drop={limit}): {gate}")  # fmt: skip
        if gate == "kept anyway":
            lines.append(f"WARNING: INT8 model KEPT DESPITE losing {-diff:.2f} AP points vs fp32 (more than "
                         f"export.int8_max_map_drop={limit}) because of --int8-keep-anyway; deploy it knowingly")  # fmt: skip
    speed = int8.get("speed")
    if speed:
        timing = (f"p50 {speed['int8_p50_ms']:.1f} ms INT8 vs {speed['fp32_p50_ms']:.1f} ms fp32, "
                  f"{speed['rounds']} alternating calls, CPU: {speed['cpu']}")  # fmt: skip
        if speed["speedup"] < 1.0:
            lines.append(f"WARNING: INT8 is SLOWER than fp32 on this machine ({speed['speedup']:.2f}x; {timing}); "
                         "INT8 gains most on CPUs with VNNI, so measure on the target device or deploy the fp32 model")  # fmt: skip
        else:
            lines.append(f"INT8 speed-up vs fp32 onnxruntime: {speed['speedup']:.2f}x ({timing})")
    return lines


def _row(name: str, metrics: dict, fmt) -> list:
    latency = metrics["latency"]
    return [name, fmt(metrics["map"]), fmt(metrics["map50"]), fmt(latency["p50_ms"], 1), fmt(latency["p90_ms"], 1)]
