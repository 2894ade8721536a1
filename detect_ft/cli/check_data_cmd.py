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
    parser.add_argument("--fast", action="store_true", help="read image headers only instead of decoding every image")


def run(args: argparse.Namespace) -> int:
    from detect_ft.data.doctor import check_split
    from detect_ft.data.findings import POLICY_KEYS
    from detect_ft.data.load import load_split
    from detect_ft.data.stats import format_stats, split_stats
    from detect_ft.errors import DataError

    cfg = config_from_args(args)
    data = cfg.data
    policies = {key: getattr(data, key) for key in POLICY_KEYS.values()}
    wanted = ("train", "val") if args.split == "both" else (args.split,)
    if not any(getattr(data, name) for name in wanted):
        raise DataError(f"{args.config}: data.{' / data.'.join(wanted)} not set; nothing to check")

    classes = list(data.classes) or None
    if "val" in wanted and data.train and data.val:
        # validation is scored against the training class list, so it is checked against it too
        train, _ = load_split(
            format=data.format,
            root=data.root,
            split=data.train,
            images=data.images,
            classes=classes,
            keep_background=data.keep_background,
        )
        classes = train.class_names

    errors = 0
    for name in wanted:
        split = getattr(data, name)
        if not split:
            print(f"== {name}: data.{name} not set, skipped\n")
            continue
        records, report = check_split(
            format=data.format,
            root=data.root,
            split=split,
            images=data.images,
            classes=classes if name == "val" else (list(data.classes) or None),
            keep_background=data.keep_background,
            policies=policies,
            decode=not args.fast,
        )
        print(f"== {name}: {report.source} ({data.format})")
        print(
            f"loaded {report.images} images, {report.boxes} boxes; after the policies {report.kept_images} "
            f"images, {report.kept_boxes} boxes"
        )
        print(format_stats(split_stats(records), records.class_names))
        print()
        _print_findings(report, policies)
        errors += len(report.errors)
        if args.plots:
            from detect_ft.data.plots import write_split_plots

            for path in write_split_plots(records, args.plots, name):
                print(f"wrote {path}")
        print()
    if errors:
        print(f"{errors} finding(s) at policy 'error': fix the data or change the data.on_* policies")
        return 1
    print("no finding at policy 'error'")
    return 0


def _print_findings(report, policies: dict[str, str]) -> None:
    from detect_ft.data.findings import KINDS, POLICY_KEYS

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
