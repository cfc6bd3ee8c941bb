"""``tuner best STUDY.yaml [--pick throughput|latency|knee | --trial N] --export cmd|yaml [--output FILE]``:
the chosen configuration as a ``vllm serve`` command line or a ``--config`` YAML, with the study's
``server.env``: ``env VAR=value ... vllm serve ...`` for ``cmd``; for ``yaml`` a comment block naming the
variables and, with ``--output FILE``, a companion ``FILE.env`` (``VAR=value`` lines: ``docker --env-file``,
``set -a; . FILE.env``), since ``vllm serve --config`` sets no environment. Secret variables are never
written: they are named on stderr. On stderr: the picked trial and what it measured (every objective, the
scored load, each SLO figure and its verdict), its first objective's mean ± half the range where ``tuner
confirm`` measured it more than once, and one line when the best other confirmed configuration is within
noise of it (:func:`tuner.report.noise.within_noise`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tuner.cli.common import load_study
from tuner.cli.output import Console
from tuner.config.spec import load_spec
from tuner.errors import EXIT_BAD_INPUT, EXIT_FAILURE, UsageError


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study")
    how = c.add_mutually_exclusive_group()
    how.add_argument("--pick", choices=("throughput", "latency", "knee"), default="throughput")
    how.add_argument("--trial", type=int, help="export this trial (a measured one) instead of a pick")
    c.add_argument("--export", choices=("cmd", "yaml"), required=True)
    c.add_argument("--output", help="write to this file instead of stdout")
    c.add_argument("--storage")


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.config.paths import check_model_access, resolve_model
    from tuner.report.export import env_file, serve_args, server_env, to_command, to_yaml
    from tuner.report.pareto import versus_defaults

    spec = load_spec(args.study)
    check_model_access(spec)  # a folder not here is fine (the export may run elsewhere); unreadable is not
    out = Path(args.output) if args.output else None
    if out is not None and not out.parent.exists():
        console.abort(f"--output {args.output}: folder {out.parent} does not exist", EXIT_BAD_INPUT)
    study = load_study(spec, args.storage)
    trial, how = _chosen(study, args.trial, args.pick)
    spread, *notes = _noise_lines(study, trial.number)
    console.info(_measured_line(study, trial, how) + spread)
    for line in notes:
        console.info(line)
    model, flags = serve_args(trial, default_model=resolve_model(spec))
    env, secret = server_env(spec.server.env)
    if secret:
        console.warn(f"left out of the export (secrets; set them yourself): {', '.join(secret)}")
    text = to_command(model, flags, env) + "\n" if args.export == "cmd" else to_yaml(model, flags, env)
    if out is None:
        console.print(text)
        console.info(versus_defaults(study, trial))
        return 0
    try:
        out.write_text(text)
        if args.export == "yaml" and env:
            companion = out.with_name(out.name + ".env")
            companion.write_text(env_file(env))
            console.info(f"server environment written to {companion}")
    except OSError as e:
        console.abort(f"cannot write {out}: {e.strerror or e}", EXIT_FAILURE)
    console.info(f"trial {trial.number} ({how}) written to {out}")
    console.info(versus_defaults(study, trial))
    return 0


def _chosen(study: Any, number: int | None, how: str) -> tuple[Any, str]:
    """The trial to export and how it was chosen: ``--trial N`` (a measured trial), else the pick."""
    from tuner.report.pareto import pick
    from tuner.report.trials import find_trial
    from tuner.search.record import read

    if number is None:
        return pick(study, how), how
    trial = find_trial(study, number)
    rec = read(trial)
    if rec.failed or rec.result is None:
        raise UsageError(
            f"--trial {number}: it has no measured configuration ({rec.failure or rec.status or rec.state.name.lower()})"
        )
    return trial, f"--trial {number}"


def _measured_line(study: Any, trial: Any, how: str) -> str:
    """``picked trial 15 (throughput): load 32; SLO capacity 4504 tok/s, TTFT p99 527 ms; TTFT p99 527 ok,
    ITL p99 31.8 ok``."""
    from tuner.report.pareto import capacity_mode
    from tuner.report.trials import measured_text, trial_rows

    row = next(r for r in trial_rows(study) if r["trial"] == trial.number)
    return f"picked trial {trial.number} ({how}): {measured_text(row, capacity_mode(study))}"


def _noise_lines(study: Any, number: int) -> list[str]:
    """For a configuration ``tuner confirm`` measured again: ``" (output throughput 4,504 ± 40 tok/s over 3
    runs)"`` (else ""), then, when the best other confirmed configuration is within noise of it, the line
    ``trials 7 and 12 are within noise: ...``."""
    import optuna

    from tuner.report.names import label, unit
    from tuner.report.noise import noise_note, runner_up, spreads, within_noise
    from tuner.report.pareto import metric_names
    from tuner.search.record import read

    metric = metric_names(study)[0]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    found = spreads((read(t) for t in study.get_trials(deepcopy=False)), maximize)
    mine = found.get(number)
    if mine is None or not mine.confirmed:
        return [""]
    lines = [f" ({label(metric)} {mine.describe(unit(metric))} over {mine.n} runs)"]
    other = runner_up(number, found, maximize)
    if other is not None and within_noise(mine, other):
        lines.append(noise_note(mine, other, unit(metric)))
    return lines
