"""``tuner measure STUDY.yaml [--set flag=value ...] [--url URL] [--json]``: measure one configuration once
(or a server already running at URL); nothing is stored. ``--set`` takes any value vLLM takes; one that the
study's search would never propose is measured with one warning line naming its search range. Exit 0 when
the measurement succeeded, else 1."""

from __future__ import annotations

import argparse
import time

from tuner.cli.common import preflight
from tuner.cli.output import Console
from tuner.config.paths import runs_dir
from tuner.config.space import outside_search, parse_sets
from tuner.config.spec import StudySpec, load_spec
from tuner.measure.result import TrialResult


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study")
    c.add_argument("--set", dest="sets", action="append", default=[], metavar="FLAG=VALUE")
    c.add_argument("--url", help="measure this running server instead of starting one")
    c.add_argument("--json", action="store_true")


def handle(args: argparse.Namespace, console: Console) -> int:
    console.json_mode = args.json
    spec = load_spec(args.study)
    params = parse_sets(spec, args.sets)
    for note in outside_search(spec, params):
        console.warn(f"{note}: measured as given")
    preflight(spec, console, params, servers=args.url is None)
    from tuner.cli.progress_rich import RichReporter
    from tuner.measure.trial import run_trial  # after the checks: it imports the load generator's stack
    from tuner.progress import NullReporter, Reporter

    log_dir = runs_dir(spec) / time.strftime("measure-%Y%m%d-%H%M%S")
    runtime_dir = runs_dir(spec) / "runtime"
    reporter: Reporter = NullReporter() if args.json else RichReporter()
    try:
        result = run_trial(
            spec, params, log_dir=log_dir, runtime_dir=runtime_dir, reporter=reporter, url=args.url
        )
    finally:
        if isinstance(reporter, RichReporter):
            reporter.close()
    if args.json:
        console.json(result.to_dict())
    else:
        _print_result(console, spec, result)
    return 0 if result.ok else 1


def _print_result(console: Console, spec: StudySpec, result: TrialResult) -> None:
    from tuner.report.fmt import fmt_num
    from tuner.report.names import label, unit
    from tuner.search.objectives import metric_or_none

    console.print(f"status: {result.status}" + (f" ({result.message})" if result.message else ""))
    names = list(dict.fromkeys([*spec.metric_names, "output_throughput", "ttft_p99", "itl_p99", "e2e_p99"]))
    for n in names:
        v = metric_or_none(result.summary, n)
        if v is not None:
            console.print(f"  {label(n):<20} {fmt_num(v):>12} {unit(n)}")
    for n, limit in spec.slo.limits().items():
        v = metric_or_none(result.summary, n)
        if v is not None:
            console.print(f"  SLO {label(n)} <= {limit:g} ms: {'met' if v <= limit else 'BROKEN'}")
    if result.log_path:
        console.print(f"  log: {result.log_path}")
