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
    parser.add_argument(
        "--output", required=True, metavar="MODEL.onnx", help="where to write the ONNX model (MODEL.xml for OpenVINO)"
    )
    parser.add_argument(
        "--format",
        choices=("onnx", "openvino"),
        default=None,
        help="onnx (default) or openvino: an fp32 OpenVINO IR (MODEL.xml + MODEL.bin) converted from the "
        "verified ONNX export and checked against PyTorch too (needs detect-ft[openvino]); default: openvino "
        "when --output ends in .xml",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: export.opset, 17)")
    parser.add_argument(
        "--config",
        default=None,
        metavar="CONFIG",
        help="config whose data.val is the parity split (default: the checkpoint's config)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the PyTorch/onnxruntime parity check")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write MODEL.int8.onnx (static INT8; refused when it loses more than "
        "export.int8_max_map_drop AP points vs fp32 on the validation split); with --format openvino "
        "MODEL.int8.xml (NNCF; gated against PyTorch)",
    )
    parser.add_argument(
        "--int8-keep-anyway",
        action="store_true",
        help="keep MODEL.int8.onnx even when it fails the export.int8_max_map_drop gate (warns)",
    )
    parser.add_argument(
        "--json", default=None, metavar="OUT", help="also write the export report (parity, mAPs, latencies) as JSON"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="images per graph run, fixed in the graph (default 1); N > 1 speeds up predict on folders and "
        "videos of same-size images, but one image alone costs N; not with --int8",
    )
    parser.add_argument(
        "--calib",
        default=None,
        metavar="CONFIG",
        help="config whose data.train gives the INT8 calibration images (default: the one above)",
    )


def run(args: argparse.Namespace) -> int:
    from detect_ft.api.exporting import export_checkpoint
    from detect_ft.export.onnx_export import MAX_BATCH
    from detect_ft.export.pipeline import Int8RefusedError
    from detect_ft.utils.errors import ConfigError, DetectFTError

    if args.opset is not None and not 11 <= args.opset <= 21:
        raise ConfigError(f"--opset {args.opset}: torchvision detectors export at opsets 11..21; use --opset 17")
    if args.int8_keep_anyway and not args.int8:
        raise DetectFTError("--int8-keep-anyway only applies with --int8")
    if not 1 <= args.batch <= MAX_BATCH:
        raise DetectFTError(f"--batch {args.batch}: pass 1 to {MAX_BATCH} images per graph run, e.g. --batch 8")
    if args.int8 and args.batch > 1:
        raise DetectFTError(f"--int8 exports at batch 1 only; leave out --batch {args.batch} or --int8")
    fmt = args.format or ("openvino" if args.output.lower().endswith(".xml") else "onnx")
    try:
        report = export_checkpoint(
            args.checkpoint,
            args.output,
            config=args.config,
            overrides=args.overrides,
            opset=args.opset,
            verify=not args.no_verify,
            int8=args.int8,
            int8_keep_anyway=args.int8_keep_anyway,
            calib_config=args.calib,
            batch=args.batch,
            format=fmt,
        )
    except Int8RefusedError as exc:  # the fp32 model was written: show its report, then the one-line error
        _print_report(exc.report, args.json)
        raise DetectFTError(str(exc).replace("(int8_keep_anyway=True)", "with --int8-keep-anyway")) from None
    _print_report(report, args.json)
    return 0


def _print_report(report: dict, json_path) -> None:
    print(format_report(report))
    if json_path:
        from detect_ft.utils.atomic_io import write_json_atomic

        write_json_atomic(json_path, report)
        print(f"wrote {json_path}")


def format_report(report: dict) -> str:
    from detect_ft.evaluation.report import fmt, format_table
    from detect_ft.inference.predictions import describe_thresholds

    lines = [
        f"exported {report['model_name']} (opset {report['opset']}{_batch_note(report)}) to {report['output']} "
        f"in {report['export_seconds']:.1f} s"
    ]
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
    thresholds = report.get("thresholds")
    if thresholds:
        shown = describe_thresholds(list(thresholds), list(thresholds.values()), report.get("pooled_thresholds", []))
        lines.append(f"stored the checkpoint's F1-optimal confidence per class ({shown}); predict uses them")
    else:
        lines.append("no validated confidence thresholds in the checkpoint: predict defaults to 0.3")
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
            rows.append(_row(int8.get("runtime", "onnx int8"), int8, fmt))
    if rows:
        lines.append(format_table(["runtime", "mAP", "mAP50", "p50 ms", "p90 ms"], rows))
        lines.append(
            f"latencies: batch-1 calls over the {parity['images']} validation images, preprocessing "
            "included, one pass per model"
        )
    if parity is not None:
        lines.append(f"ONNX mAP differs from PyTorch by {parity['map_diff_points']:+.2f} AP points")
    if int8 is not None:
        lines += _int8_lines(int8)
    if report.get("format") == "openvino":
        lines.append(_openvino_line(report))
    return "\n".join(lines)


def _openvino_line(report: dict) -> str:
    parity = report["openvino"].get("parity")
    if parity is None:
        return f"converted to OpenVINO IR (fp32) {report['output']}; its parity check was skipped"
    det = parity["detections"]
    return (
        f"converted to OpenVINO IR (fp32) {report['output']}: {det['matched']}/{det['reference_detections']} "
        f"PyTorch detections matched, mAP {parity['onnx']['map']:.4f} differs from PyTorch by "
        f"{parity['map_diff_points']:+.2f} AP points, p50 {parity['onnx']['latency']['p50_ms']:.1f} ms"
    )


def _batch_note(report: dict) -> str:
    batch = report.get("batch", 1)
    return f", {batch} same-size images per run" if batch > 1 else ""


def _int8_lines(int8: dict) -> list[str]:
    """The INT8 gate and speed lines of the export report; the problems as loud WARNING lines."""
    lines = []
    gate, limit = int8.get("gate"), int8.get("max_map_drop")
    if gate == "not checked":
        lines.append(
            "WARNING: the INT8 model was NOT CHECKED for accuracy: there is no validation split "
            "(--no-verify or export.verify=false), so how much mAP it loses is unknown; export with a "
            "validation split to gate it"
        )
    elif gate is not None:
        diff = int8["map_diff_points"]
        lines.append(
            f"INT8 mAP differs from {int8.get('baseline', 'fp32 ONNX')} by {diff:+.2f} AP points "
            f"(allowed drop: export.int8_max_map_drop={limit}): {gate}"
        )
        if gate == "kept anyway":
            lines.append(
                f"WARNING: INT8 model KEPT DESPITE losing {-diff:.2f} AP points vs fp32 (more than "
                f"export.int8_max_map_drop={limit}) because of --int8-keep-anyway; deploy it knowingly"
            )
    speed = int8.get("speed")
    if speed:
        timing = (
            f"p50 {speed['int8_p50_ms']:.1f} ms INT8 vs {speed['fp32_p50_ms']:.1f} ms fp32, "
            f"{speed['method']}, CPU: {speed['cpu']}"
        )
        if speed["speedup"] < 1.0:
            lines.append(
                f"WARNING: INT8 is SLOWER than fp32 on this machine ({speed['speedup']:.2f}x; {timing}); "
                "INT8 gains most on CPUs with VNNI, so measure on the target device or deploy the fp32 model"
            )
        else:
            lines.append(
                f"INT8 speed-up vs {int8.get('speed_baseline', 'fp32 onnxruntime')}: {speed['speedup']:.2f}x ({timing})"
            )
    return lines


def _row(name: str, metrics: dict, fmt) -> list:
    latency = metrics["latency"]
    return [name, fmt(metrics["map"]), fmt(metrics["map50"]), fmt(latency["p50_ms"], 1), fmt(latency["p90_ms"], 1)]
