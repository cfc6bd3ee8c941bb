"""``tuner best STUDY.yaml [--pick throughput|latency|knee] --export cmd|yaml [--output FILE]``: the chosen
configuration as a ``vllm serve`` command line or a ``--config`` YAML."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuner.cli.common import load_study
from tuner.cli.output import Console
from tuner.config.spec import load_spec
from tuner.errors import EXIT_BAD_INPUT, EXIT_FAILURE


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study")
    c.add_argument("--pick", choices=("throughput", "latency", "knee"), default="throughput")
    c.add_argument("--export", choices=("cmd", "yaml"), required=True)
    c.add_argument("--output", help="write to this file instead of stdout")
    c.add_argument("--storage")


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.config.paths import resolve_model
    from tuner.report.export import serve_args, to_command, to_yaml
    from tuner.report.pareto import pick

    spec = load_spec(args.study)
    out = Path(args.output) if args.output else None
    if out is not None and not out.parent.exists():
        console.abort(f"--output {args.output}: folder {out.parent} does not exist", EXIT_BAD_INPUT)
    study = load_study(spec, args.storage)
    trial = pick(study, args.pick)
    model, flags = serve_args(trial, default_model=resolve_model(spec))
    text = to_command(model, flags) + "\n" if args.export == "cmd" else to_yaml(model, flags)
    if out is None:
        console.print(text)
        return 0
    try:
        out.write_text(text)
    except OSError as e:
        console.abort(f"cannot write {out}: {e.strerror or e}", EXIT_FAILURE)
    console.info(f"trial {trial.number} ({args.pick}) written to {out}")
    return 0
