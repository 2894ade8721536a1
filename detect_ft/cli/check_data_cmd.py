"""``detect-ft check-data CONFIG``: the dataset doctor on the configured splits."""

from __future__ import annotations

import argparse

from detect_ft.cli.common import add_config_arguments, config_from_args

HELP = "check a dataset (images, sizes, boxes, classes), print statistics and findings"

# findings printed per kind before the rest are only counted
MAX_PRINTED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--split", choices=("train", "val", "both"), default="both", help="which split to check")
    parser.add_argument("--plots", metavar="DIR", default="", help="write PNG histograms and annotated samples here")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="read image headers and file ends only (the check training runs) instead of decoding every image",
    )


def run(args: argparse.Namespace) -> int:
    from detect_ft.data.split import SplitSpec
    from detect_ft.utils.errors import DataError

    cfg = config_from_args(args)
    data = cfg.data
    spec = SplitSpec.from_config(data)
    wanted = ("train", "val") if args.split == "both" else (args.split,)
    if not any(getattr(data, name) for name in wanted):
        raise DataError(f"{args.config}: data.{' / data.'.join(wanted)} not set; nothing to check")

    # validation is scored against the training split's classes, so it is checked against them
    val_classes = _val_classes(data) if wanted == ("val",) and data.train and data.val else list(data.classes) or None
    errors = 0
    for name in wanted:
        split = getattr(data, name)
        if not split:
            print(f"== {name}: data.{name} not set, skipped\n")
            continue
        classes = val_classes if name == "val" else data.classes
        records, split_errors = _check_one(spec, name, split, classes, decode=not args.fast, plots=args.plots)
        errors += split_errors
        if name == "train":
            val_classes = records.class_names
            _print_anchors(cfg.model, records)
    if errors:
        print(f"{errors} finding(s) at policy 'error': fix the data or change the data.on_* policies")
        return 1
    print("no finding at policy 'error'")
    return 0


def _val_classes(data) -> list[str]:
    """The training split's class names, for checking the validation split alone."""
    from detect_ft.data.load import load_split

    train, _ = load_split(
        format=data.format,
        root=data.root,
        split=data.train,
        images=data.images,
        classes=list(data.classes) or None,
        keep_background=data.keep_background,
    )
    return train.class_names


def _check_one(spec, name: str, split: str, classes, *, decode: bool, plots: str):
    """Check one split, print its statistics and findings (and write plots); return its records (after
    the policies) and its error count."""
    from detect_ft.data.split import report_split
    from detect_ft.data.stats import format_stats, split_stats

    records, report = report_split(spec, split, classes, decode=decode)
    print(f"== {name}: {report.source} ({spec.format})")
    print(
        f"loaded {report.images} images, {report.boxes} boxes; after the policies {report.kept_images} "
        f"images, {report.kept_boxes} boxes"
    )
    print(format_stats(split_stats(records), records.class_names))
    print()
    _print_findings(report, spec.policies)
    if plots:
        from detect_ft.data.split_plots import write_split_plots

        for path in write_split_plots(records, plots, name):
            print(f"wrote {path}")
    print()
    return records, len(report.errors)


def _print_anchors(model_config, records) -> None:
    """The configured model's anchors and anchors fitted to ``records``, with the share of boxes each
    covers, and the config line that uses the fitted ones (anchor-based models with boxes only)."""
    from detect_ft.models import build_model
    from detect_ft.models.anchors import fit_model_anchors, has_anchors, input_resize
    from detect_ft.utils.errors import DataError

    m = model_config
    if not has_anchors(m.name) or not records.num_boxes:
        return
    # random weights: only the anchor generator and the input transform are read
    model = build_model(
        m.name,
        max(records.num_classes, 1),
        weights="none",
        backbone=m.backbone or None,
        min_size=m.min_size,
        max_size=m.max_size,
        anchor_sizes=m.anchor_sizes,
        anchor_ratios=m.anchor_ratios,
    )
    try:
        fit = fit_model_anchors(model, records.records)
    except DataError:  # crowd boxes only
        return
    mine = "configured (model.anchor_sizes / model.anchor_ratios)" if m.anchor_sizes or m.anchor_ratios else "default"
    print(f"== anchors of {m.name}, on {fit.boxes} training boxes at its input size ({input_resize(model)})")
    print(fit.current.legend())
    print("coverage: share of boxes whose best anchor shape (centred; widths and heights only) has IoU >= 0.5")
    for label, anchors, share in (
        (mine, fit.current, fit.current_coverage),
        ("fitted", fit.fitted, fit.fitted_coverage),
    ):
        sizes, ratios = anchors.config_values()
        print(f"{label}: sizes {sizes}, ratios {ratios}: coverage {share:.1%}")
    print(f"to use the fitted ones: model.anchors=auto (fitted when training starts), or {fit.config_line()}")
    print()


def _print_findings(report, policies: dict[str, str]) -> None:
    from detect_ft.data.checks.findings import KINDS, POLICY_KEYS

    if not report.findings:
        print("findings: none")
        return
    counts = report.counts()
    print("findings: " + ", ".join(f"{kind} {counts[kind]}" for kind in KINDS if kind in counts))
    for kind in KINDS:
        found = [f for f in report.findings if f.kind == kind]
        if not found:
            continue
        print(f"-- {kind}: {len(found)} (data.{POLICY_KEYS[kind]}={policies[POLICY_KEYS[kind]]})")
        for finding in found[:MAX_PRINTED]:
            print("  " + finding.describe())
        if len(found) > MAX_PRINTED:
            print(f"  ... and {len(found) - MAX_PRINTED} more")
