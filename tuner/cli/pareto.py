"""``tuner pareto STUDY.yaml [--steps] [--format table|json|csv] [--plot FILE.html|FILE.png] [--storage URL]``:
the feasible non-dominated trials against the baseline, or with ``--steps`` the step-level front (for each
throughput, the configuration and load with the lowest latency, over every measured step)."""

from __future__ import annotations

import argparse

from tuner.cli.common import load_study
from tuner.cli.output import Console
from tuner.config.spec import load_spec


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study")
    c.add_argument(
        "--steps",
        action="store_true",
        help="the step-level front: every measured step (configuration x load) that no other step beats "
        "on output throughput and latency",
    )
    c.add_argument("--format", choices=("table", "json", "csv"), default="table")
    c.add_argument("--plot", help="also write a plot: FILE.html (interactive) or FILE.png")
    c.add_argument("--storage")


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.report.pareto import pareto_rows, step_rows, step_view
    from tuner.report.plot import check_target, write_plot
    from tuner.report.table import rich_table, steps_csv, steps_table, to_csv

    console.json_mode = args.format == "json"
    spec = load_spec(args.study)
    if args.plot:
        check_target(args.plot)
    study = load_study(spec, args.storage)
    rows = step_rows(study) if args.steps else pareto_rows(study)
    if args.format == "json":
        console.json(rows)
    elif args.format == "csv":
        console.print(steps_csv(rows) if args.steps else to_csv(rows))
    elif args.steps:
        latency = step_view(study).primary
        title = f"{spec.name}: step-level front on {latency} ({len(rows)} steps)"
        console.render(steps_table(rows, title=title))
    else:
        console.render(rich_table(rows, title=f"{spec.name}: Pareto front ({len(rows)} configurations)"))
    if args.plot:
        path = write_plot(study, args.plot)
        console.info(f"plot written to {path}")
    return 0
