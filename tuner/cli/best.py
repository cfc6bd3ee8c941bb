"""``tuner best STUDY.yaml [--pick throughput|latency|knee] --export cmd|yaml [--output FILE]``: the chosen
configuration as a ``vllm serve`` command line or a ``--config`` YAML. On stderr: the picked trial with its
first objective (mean ± half the range where ``tuner confirm`` measured it more than once), and one line when
the best other confirmed configuration is within noise of it (:func:`tuner.report.noise.within_noise`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    for line in _noise_lines(study, trial.number, args.pick):
        console.info(line)
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


def _noise_lines(study: Any, number: int, how: str) -> list[str]:
    """``picked trial 7 (throughput): output_throughput 4,504 ± 40 tok/s over 3 runs`` and, when the best
    other confirmed configuration is within noise of it, ``trials 7 and 12 are within noise: ...``."""
    import optuna

    from tuner.report.noise import noise_note, runner_up, spreads, within_noise
    from tuner.report.pareto import metric_names, unit
    from tuner.search.record import read

    metric = metric_names(study)[0]
    found = spreads(read(t) for t in study.get_trials(deepcopy=False))
    mine = found.get(number)
    if mine is None:
        return [f"picked trial {number} ({how})"]
    runs = f" over {mine.n} runs" if mine.confirmed else " (one run: `tuner confirm` measures it again)"
    lines = [f"picked trial {number} ({how}): {metric} {mine.describe(unit(metric))}{runs}"]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    other = runner_up(number, found, maximize)
    if mine.confirmed and other is not None and within_noise(mine, other):
        lines.append(noise_note(mine, other, unit(metric)))
    return lines
