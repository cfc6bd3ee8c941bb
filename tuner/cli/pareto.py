"""``tuner pareto STUDY.yaml [--steps] [--format table|json|csv] [--plot FILE.html|FILE.png] [--storage URL]``:
the feasible non-dominated trials and the baseline (:func:`tuner.report.pareto.report_rows`), or with
``--steps`` the step-level front (for each throughput, the configuration and load with the lowest latency,
over every measured step). The table fits the terminal (a narrow layout below 120 columns); JSON and CSV are
:mod:`tuner.report.machine`'s."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

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
    from tuner.report.machine import steps_csv, steps_json
    from tuner.report.pareto import step_rows, step_view
    from tuner.report.plot import check_target, write_plot
    from tuner.report.table import steps_table

    console.json_mode = args.format == "json"
    spec = load_spec(args.study)
    if args.plot:
        check_target(args.plot)
    study = load_study(spec, args.storage)
    if not args.steps:
        _front(study, args.format, console)
    elif args.format == "json":
        console.json(steps_json(step_rows(study), step_view(study).slo))
    elif args.format == "csv":
        console.print(steps_csv(step_rows(study)))
    else:
        rows = step_rows(study)
        latency = step_view(study).primary
        console.print(f"{spec.name}: step-level front on {latency} ({len(rows)} steps)")
        console.render(steps_table(rows, title=None))
    if args.plot:
        path = write_plot(study, args.plot)
        console.info(f"plot written to {path}")
    return 0


def _front(study: Any, fmt: str, console: Console) -> None:
    from tuner.report.machine import front_csv, front_json
    from tuner.report.pareto import capacity_mode, front_header, report_rows
    from tuner.report.table import front_table, legend

    rows = report_rows(study)
    if fmt == "json":
        console.json(front_json(rows))
        return
    if fmt == "csv":
        console.print(front_csv(rows))
        return
    width = console.width()
    header = front_header(study, rows)
    for line in header:
        console.print(textwrap.fill(line, width, subsequent_indent="  "))
    if not any(r.get("on_front", True) for r in rows):
        return
    table, layout = front_table(rows, width, capacity_mode(study))
    console.render(table, width=width)
    key = legend(rows, layout)
    if key:
        console.print(textwrap.fill(key, width, subsequent_indent="  "))
