"""``tuner confirm STUDY.yaml [--top 3] [--repeats 2] [--storage URL]``: re-measure the leading configurations
of a study, each in fresh server starts, and show each one's mean and spread (:mod:`tuner.search.confirm`;
the defaults are the study file's ``confirm`` option, else 3 and 2)."""

from __future__ import annotations

import argparse
from typing import Any

from tuner.cli.common import load_study, preflight
from tuner.cli.output import Console
from tuner.cli.run import add_accept_changes, positive_int
from tuner.config.spec import Confirm, load_spec


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study", help="the study file (YAML)")
    c.add_argument("--top", type=positive_int, help="how many leading configurations (default 3)")
    c.add_argument("--repeats", type=positive_int, help="fresh measurements of each (default 2)")
    c.add_argument("--storage", help="storage URL (default: the study file's, else sqlite beside it)")
    add_accept_changes(c)


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.cli.progress_rich import RichReporter
    from tuner.search.loop import run_study

    spec = load_spec(args.study)
    if args.storage is not None:
        from tuner.search.storage import parse_url

        parse_url(args.storage)
    preflight(spec, console)
    default = spec.confirm or Confirm()
    confirm = Confirm(top=args.top or default.top, repeats=args.repeats or default.repeats)
    with RichReporter() as reporter:
        outcome = run_study(
            spec,
            storage_url=args.storage,
            reporter=reporter,
            must_exist=True,
            confirm=confirm,
            accept_changes=args.accept_changes,
        )
    console.info(f"study {outcome.study_name}: {outcome.repeats} repeat(s) measured in this run")
    _print_spreads(load_study(spec, args.storage), console)
    return 0


def _print_spreads(study: Any, console: Console) -> None:
    """One line per confirmed configuration, best mean first."""
    import optuna

    from tuner.report.names import unit
    from tuner.report.pareto import metric_names
    from tuner.report.status import confirmed, describe_confirmed
    from tuner.search.record import read

    metric = metric_names(study)[0]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    rows = confirmed([read(t) for t in study.get_trials(deepcopy=False)], maximize)
    if not rows:
        console.info("no feasible configuration to confirm yet")
    for r in rows:
        console.print(f"{metric}: {describe_confirmed(r, unit(metric))}")
