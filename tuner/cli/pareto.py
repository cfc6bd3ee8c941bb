"""``tuner pareto STUDY.yaml [--format table|json|csv] [--plot FILE.html|FILE.png] [--storage URL]``: the
feasible non-dominated trials, against the baseline."""

from __future__ import annotations

import argparse

from tuner.cli.common import load_study
from tuner.cli.output import Console
from tuner.config.spec import load_spec


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study")
    c.add_argument("--format", choices=("table", "json", "csv"), default="table")
    c.add_argument("--plot", help="also write a plot: FILE.html (interactive) or FILE.png")
    c.add_argument("--storage")


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.report.pareto import pareto_rows
    from tuner.report.plot import check_target, write_plot
    from tuner.report.table import rich_table, to_csv

    console.json_mode = args.format == "json"
    spec = load_spec(args.study)
    if args.plot:
        check_target(args.plot)
    study = load_study(spec, args.storage)
    rows = pareto_rows(study)
    if args.format == "json":
        console.json(rows)
    elif args.format == "csv":
        console.print(to_csv(rows))
    else:
        console.render(rich_table(rows, title=f"{spec.name}: Pareto front ({len(rows)} configurations)"))
    if args.plot:
        path = write_plot(study, args.plot)
        console.info(f"plot written to {path}")
    return 0
