"""``tuner trials STUDY.yaml [--json] [--storage URL]``: every trial in one line — number, status or failure
class, scored load, score and each SLO figure with its verdict (:func:`tuner.report.trials.trial_rows`)."""

from __future__ import annotations

import argparse

from tuner.cli.common import load_study
from tuner.cli.output import Console
from tuner.config.spec import load_spec


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study")
    c.add_argument("--json", action="store_true")
    c.add_argument("--storage")


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.report.pareto import capacity_mode
    from tuner.report.trials import row_line, trial_rows

    console.json_mode = args.json
    spec = load_spec(args.study)
    study = load_study(spec, args.storage)
    rows = trial_rows(study)
    if args.json:
        console.json(rows)
        return 0
    if not rows:
        console.info(f"study {spec.name!r} has no trials yet")
    capacity = capacity_mode(study)
    for r in rows:
        console.print(row_line(r, capacity))
    return 0
