"""``tuner``: the command line. Thin: it parses, checks, calls the library, prints.

Commands::

    tuner run STUDY.yaml [--n-trials N] [--timeout 8h|30m|90s] [--storage URL]
    tuner resume STUDY.yaml [--n-trials N] [--timeout ...] [--storage URL]
    tuner pareto STUDY.yaml [--format table|json|csv] [--plot FILE.html|FILE.png] [--storage URL]
    tuner best STUDY.yaml [--pick throughput|latency|knee] --export cmd|yaml [--output FILE] [--storage URL]
    tuner status [STUDY.yaml] [--storage URL] [--json]
    tuner measure STUDY.yaml [--set flag=value ...] [--url URL] [--json]
    tuner make-model DIR

Exit status: 0 done; 1 a failure that is not the user's input (storage, a measurement that failed, no
feasible trial yet); 2 bad input (study file, arguments, storage URL, ``--set``); 130 interrupted (the study
is resumable). Every error is one line on stderr (``tuner: error: ...``), never a traceback. All input is
checked before a study database is opened for writing, so bad input leaves it byte-identical.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from tuner import __version__
from tuner.cli.output import Console
from tuner.config.argv import Param
from tuner.config.spec import (
    Choices,
    FloatRange,
    IntRange,
    StudySpec,
    choice_label,
    default_storage,
    load_spec,
    runs_dir,
)
from tuner.errors import TunerError, UsageError

_FLAG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def parse_duration(text: str) -> float:
    """``"8h"``, ``"30m"``, ``"90s"``, ``"1h30m"``, ``"3600"`` -> seconds. Raises :class:`UsageError`."""
    t = text.strip().lower()
    try:
        seconds = float(t)
    except ValueError:
        parts = _DURATION_RE.findall(t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise UsageError(f"--timeout {text!r}: write it like 8h, 30m, 90s or 1h30m") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"--timeout {text!r}: must be positive")
    return seconds


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    p = _Parser(
        prog="tuner", description="Find the best vLLM server flags for a workload, under latency SLOs."
    )
    p.add_argument("--version", action="version", version=f"tuner {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, text in (("run", "create or continue a study"), ("resume", "continue a study after a stop")):
        c = sub.add_parser(name, help=text)
        c.add_argument("study", help="the study file (YAML)")
        c.add_argument("--n-trials", type=_positive_int, help="the budget of finished trials (stored)")
        c.add_argument("--timeout", help="stop starting trials after this long: 8h, 30m, 90s")
        c.add_argument("--storage", help="storage URL (default: the study file's, else sqlite beside it)")

    c = sub.add_parser("pareto", help="the feasible non-dominated configurations")
    c.add_argument("study")
    c.add_argument("--format", choices=("table", "json", "csv"), default="table")
    c.add_argument("--plot", help="also write a plot: FILE.html (interactive) or FILE.png")
    c.add_argument("--storage")

    c = sub.add_parser("best", help="export one configuration of the front")
    c.add_argument("study")
    c.add_argument("--pick", choices=("throughput", "latency", "knee"), default="throughput")
    c.add_argument("--export", choices=("cmd", "yaml"), required=True)
    c.add_argument("--output", help="write to this file instead of stdout")
    c.add_argument("--storage")

    c = sub.add_parser("status", help="studies and how far they are")
    c.add_argument("study", nargs="?")
    c.add_argument("--storage")
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("measure", help="measure one configuration once (no study)")
    c.add_argument("study")
    c.add_argument("--set", dest="sets", action="append", default=[], metavar="FLAG=VALUE")
    c.add_argument("--url", help="measure this running server instead of starting one")
    c.add_argument("--json", action="store_true")

    c = sub.add_parser("make-model", help="write the tiny random model used by the demo and tests")
    c.add_argument("dir")
    sub.add_parser(
        "sim", help="serve the simulated vLLM (vLLM's flags; see docs/simulator.md)", add_help=False
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sim"]:  # its own parser: vLLM's flags, passed through untouched
        from tuner.sim.__main__ import main as sim_main

        return sim_main(args_list[1:])
    console = Console(json_mode="--json" in args_list or ("--format" in args_list and "json" in args_list))
    _quiet_libraries()
    try:
        args = build_parser().parse_args(args_list)
        handler = _COMMANDS[args.command]
        return handler(args, console)
    except TunerError as e:
        console.error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


# ------------------------------------------------------------------------------------------------ commands


def _preflight(
    spec: StudySpec, console: Console, sets: dict[str, Param] | None = None, *, servers: bool = True
) -> None:
    """Checks of a study about to start servers, before anything is written: model folders, the flags
    against the installed vLLM's parser (:mod:`tuner.server.vllm_args`), and a loud word on a non-loopback host."""
    import os

    from tuner.config.spec import check_models
    from tuner.server.vllm_args import check_flags

    check_models(spec)
    if spec.storage is not None:
        from tuner.search.storage import parse_url

        parse_url(spec.storage)  # measure stores nothing, but a bad study file is bad input everywhere
    if not servers:
        return
    check_flags(
        spec,
        sets,
        on_build=lambda: console.info(
            "checking the study's flags against vLLM's own argument parser (once per vLLM install) ..."
        ),
    )
    host = spec.server.host
    if not _is_loopback(host):
        guarded = bool(
            spec.server.args.get("api-key")
            or spec.server.env.get("VLLM_API_KEY")
            or os.environ.get("VLLM_API_KEY")
        )
        console.warn(
            f"server.host is {host}: every vLLM server this study starts listens on {host}, reachable from "
            "other machines" + ("" if guarded else ", with no API key (anyone who reaches it can use it)")
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from tuner.cli.progress_rich import RichReporter
    from tuner.search.loop import run_study

    spec = load_spec(args.study)
    timeout = parse_duration(args.timeout) if args.timeout else None
    if args.storage is not None:
        from tuner.search.storage import parse_url

        parse_url(args.storage)
    _preflight(spec, console)
    with RichReporter() as reporter:
        outcome = run_study(
            spec,
            n_trials=args.n_trials,
            timeout_s=timeout,
            storage_url=args.storage,
            reporter=reporter,
            must_exist=args.command == "resume",
        )
    note = f" (repaired interrupted trials {outcome.repaired})" if outcome.repaired else ""
    console.info(
        f"study {outcome.study_name}: {outcome.complete}/{outcome.budget} trials finished, "
        f"{outcome.told} in this run, stopped by {outcome.stopped}{note}"
    )
    console.info(f"see the front: tuner pareto {args.study}")
    return 0


def _load_study(spec: StudySpec, storage: str | None) -> Any:
    """The study of ``spec``, opened without creating anything."""
    import optuna

    from tuner.search.storage import open_storage, storage_errors

    url = storage or default_storage(spec)
    st = open_storage(url, create=False)
    with storage_errors(url):
        try:
            return optuna.load_study(study_name=spec.name, storage=st)
        except KeyError:
            raise UsageError(f"no study named {spec.name!r} in {url}: start it with `tuner run`") from None


def _cmd_pareto(args: argparse.Namespace, console: Console) -> int:
    from tuner.report.pareto import pareto_rows
    from tuner.report.plot import check_target, write_plot
    from tuner.report.table import rich_table, to_csv

    spec = load_spec(args.study)
    if args.plot:
        check_target(args.plot)
    study = _load_study(spec, args.storage)
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


def _cmd_best(args: argparse.Namespace, console: Console) -> int:
    from tuner.config.spec import resolve_model
    from tuner.report.export import serve_args, to_command, to_yaml
    from tuner.report.pareto import pick

    spec = load_spec(args.study)
    out = Path(args.output) if args.output else None
    if out is not None and not out.parent.exists():
        raise UsageError(f"--output {args.output}: folder {out.parent} does not exist")
    study = _load_study(spec, args.storage)
    trial = pick(study, args.pick)
    model, flags = serve_args(trial, default_model=resolve_model(spec))
    text = to_command(model, flags) + "\n" if args.export == "cmd" else to_yaml(model, flags)
    if out is not None:
        try:
            out.write_text(text)
        except OSError as e:
            raise TunerError(f"cannot write {out}: {e.strerror or e}") from None
        console.info(f"trial {trial.number} ({args.pick}) written to {out}")
    else:
        console.print(text)
    return 0


def _cmd_status(args: argparse.Namespace, console: Console) -> int:
    import optuna

    from tuner.search.storage import open_storage, storage_errors

    spec = load_spec(args.study) if args.study else None
    url = args.storage or (default_storage(spec) if spec else None)
    if url is None:
        raise UsageError("status: give a study file or --storage URL")
    st = open_storage(url, create=False)
    with storage_errors(url):
        names = [spec.name] if spec else sorted(s.study_name for s in optuna.get_all_study_summaries(st))
        rows = [_status_row(optuna.load_study(study_name=n, storage=st)) for n in names if _exists(st, n)]
    if spec and not rows:
        raise UsageError(f"no study named {spec.name!r} in {url}")
    if args.json:
        console.json(rows)
        return 0
    if not rows:
        console.info(f"no studies in {url}")
    for r in rows:
        left = "" if r["time_left_s"] is None else f", about {_human(r['time_left_s'])} left"
        console.print(
            f"{r['study']}: {r['finished']}/{r['budget']} finished ({r['ok']} measured, {r['failed']} failed), "
            f"{r['running']} running, {r['queued']} queued, {r['interrupted']} interrupted{left}; "
            f"best so far: {r['best'] or '-'}"
        )
        starts = _starts_line(r["starts"])
        if starts:
            console.print(f"  server starts: {starts}")
    return 0


def _starts_line(starts: dict[str, Any] | None) -> str | None:
    """``3 with a compiled key (mean 81.6 s), 6 new (mean 110.9 s); 26.8 trials per hour`` from a status
    row's ``starts`` (parts without data left out); None for a study without compile-key records."""
    from tuner.search.restart_cost import StartSummary

    return StartSummary.from_dict(starts).describe() if starts else None


def _exists(storage: Any, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _status_row(study: Any) -> dict[str, Any]:
    from optuna.trial import TrialState

    from tuner.report.pareto import best_so_far
    from tuner.search.loop import trial_is_orphan
    from tuner.search.record import study_launches
    from tuner.search.restart_cost import summarize_starts

    trials = study.get_trials(deepcopy=False)
    now = time.time()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    running = [t for t in trials if t.state == TrialState.RUNNING and not trial_is_orphan(t, now=now)]
    budget = study.user_attrs.get("n_trials")
    launched = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in complete
        if t.user_attrs.get("launched") and t.datetime_start and t.datetime_complete
    ]
    left: float | None = None
    remaining = max(budget - len(complete), 0) if isinstance(budget, int) else 0
    if remaining and launched:
        left = remaining * (sum(launched) / len(launched)) / max(len(running), 1)
    launches = study_launches(complete)  # none for a study from a tuner without compile-key records
    return {
        "study": study.study_name,
        "budget": budget,
        "finished": len(complete),
        "ok": sum(t.user_attrs.get("status", "ok") == "ok" for t in complete),
        "failed": sum(t.user_attrs.get("status", "ok") != "ok" for t in complete),
        "running": len(running),
        "orphaned": sum(t.state == TrialState.RUNNING for t in trials) - len(running),
        "queued": sum(t.state == TrialState.WAITING for t in trials),
        "interrupted": sum(
            t.state == TrialState.FAIL and bool(t.user_attrs.get("interrupted")) for t in trials
        ),
        "best": best_so_far(study),
        "time_left_s": left,
        # server starts with a compiled / a new compile key, and trials per hour (None: not recorded)
        "starts": summarize_starts(launches).to_dict() if launches else None,
    }


def _human(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def parse_sets(spec: StudySpec, sets: Sequence[str]) -> dict[str, Param]:
    """``["max-num-seqs=64", "block-size=32"]`` -> params. Values are YAML scalars; a searched flag's value
    must lie in its search entry (a choice by its label). Raises :class:`UsageError` (one line)."""
    params: dict[str, Param] = {}
    for item in sets:
        name, sep, raw = item.partition("=")
        name = name.strip().removeprefix("--")
        if not sep or not name:
            raise UsageError(f"--set {item!r}: write it as flag=value")
        if not _FLAG_RE.match(name) or name in ("model", "host", "port"):
            raise UsageError(f"--set {item!r}: {name!r} is not a flag tuner may set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UsageError(f"--set {item!r}: the value is not a YAML scalar") from None
        if isinstance(value, dict | list) or not (
            value is None or isinstance(value, bool | int | float | str)
        ):
            raise UsageError(f"--set {item!r}: the value must be a single number, word or true/false")
        entry = spec.search.get(name)
        if entry is not None:
            value = _check_against(name, item, value, entry)
        params[name] = value
    return params


def _check_against(name: str, item: str, value: Param, entry: Any) -> Param:
    if isinstance(entry, Choices):
        labels = entry.labels()
        wanted = "none" if value is None else value
        for label in labels:
            if type(label) is type(wanted) and label == wanted:
                return label
            if isinstance(label, float) and type(wanted) is int and label == wanted:
                return label
        raise UsageError(f"--set {item!r}: {name} must be one of {[choice_label(c) for c in entry.choices]}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"--set {item!r}: {name} needs a number")
    if isinstance(entry, IntRange):
        if isinstance(value, float) and not value.is_integer():
            raise UsageError(f"--set {item!r}: {name} needs an integer")
        value = int(value)
    assert isinstance(entry, FloatRange | IntRange)
    if not math.isfinite(value) or not entry.low <= value <= entry.high:
        raise UsageError(f"--set {item!r}: {name} must lie in [{entry.low}, {entry.high}] (its search range)")
    return float(value) if isinstance(entry, FloatRange) else value


def _cmd_measure(args: argparse.Namespace, console: Console) -> int:
    spec = load_spec(args.study)
    params = parse_sets(spec, args.sets)
    _preflight(spec, console, params, servers=args.url is None)
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


def _print_result(console: Console, spec: StudySpec, result: Any) -> None:
    from tuner.report.fmt import fmt_num
    from tuner.report.pareto import unit
    from tuner.search.objectives import metric_or_none

    console.print(f"status: {result.status}" + (f" ({result.message})" if result.message else ""))
    names = list(dict.fromkeys([*spec.metric_names, "output_throughput", "ttft_p99", "itl_p99", "e2e_p99"]))
    for n in names:
        v = metric_or_none(result.summary, n)
        if v is not None:
            console.print(f"  {n:<20} {fmt_num(v):>12} {unit(n)}")
    for n, limit in spec.slo.limits().items():
        v = metric_or_none(result.summary, n)
        if v is not None:
            console.print(f"  SLO {n} <= {limit:g} ms: {'met' if v <= limit else 'BROKEN'}")
    if result.log_path:
        console.print(f"  log: {result.log_path}")


def _cmd_make_model(args: argparse.Namespace, console: Console) -> int:
    from tuner.modelgen import write_tiny_model

    try:
        path = write_tiny_model(args.dir)
    except OSError as e:
        raise TunerError(f"cannot write the model to {args.dir}: {e.strerror or e}") from None
    console.print(str(path))
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "resume": _cmd_run,
    "pareto": _cmd_pareto,
    "best": _cmd_best,
    "status": _cmd_status,
    "measure": _cmd_measure,
    "make-model": _cmd_make_model,
}
