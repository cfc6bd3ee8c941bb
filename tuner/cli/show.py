"""``tuner show STUDY.yaml TRIAL [--json] [--storage URL]``: one trial whole — flags and argv, status and
failure message, each load step with every SLO figure and its verdict, the capacity bracket, telemetry and
bottleneck, the memory check, what was sent, the log tail (secrets masked). The figures are
:func:`tuner.report.trials.trial_detail`'s."""

from __future__ import annotations

import argparse

from tuner.cli.common import load_study
from tuner.cli.output import Console
from tuner.config.spec import load_spec


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study")
    c.add_argument("trial", type=int, help="the trial's number (as `tuner trials` lists them)")
    c.add_argument("--json", action="store_true")
    c.add_argument("--storage")


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.config.redact import spec_redactor
    from tuner.report.trials import detail_lines, trial_detail

    console.json_mode = args.json
    spec = load_spec(args.study)
    study = load_study(spec, args.storage)
    detail = trial_detail(study, args.trial, spec_redactor(spec))
    if args.json:
        console.json(detail)
    else:
        for line in detail_lines(detail):
            console.print(line)
    return 0
