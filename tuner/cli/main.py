"""``tuner``: the command line, a table of commands. Each command is a module of this package with
``add_arguments(parser)`` and ``handle(args, console) -> int``; it parses, checks, calls the library and prints
through :class:`tuner.cli.output.Console`.

Commands::

    tuner run STUDY.yaml [--n-trials N] [--timeout 8h|30m|90s] [--storage URL]
    tuner resume STUDY.yaml [--n-trials N] [--timeout ...] [--storage URL]
    tuner pareto STUDY.yaml [--format table|json|csv] [--plot FILE.html|FILE.png] [--storage URL]
    tuner best STUDY.yaml [--pick throughput|latency|knee] --export cmd|yaml [--output FILE] [--storage URL]
    tuner status [STUDY.yaml] [--storage URL] [--json]
    tuner trials STUDY.yaml [--json] [--storage URL]
    tuner show STUDY.yaml TRIAL [--json] [--storage URL]
    tuner confirm STUDY.yaml [--top 3] [--repeats 2] [--storage URL]
    tuner measure STUDY.yaml [--set flag=value ...] [--url URL] [--json]
    tuner make-model DIR
    tuner sim --model DIR [vLLM flags] [--sim-* flags]

``tuner`` alone prints this help (exit 0). Exit status (:mod:`tuner.errors`): 0 done; 1 a failure that is not the user's input (storage, a measurement
that failed, no feasible trial yet); 2 bad input (study file, arguments, storage URL, ``--set``); 130
interrupted (the study is resumable). Every error is one line on stderr (``tuner: error: ...``, through
:meth:`Console.abort`), never a traceback. All input is checked before a study database is opened for
writing, so bad input leaves it byte-identical. ``tuner sim`` is the simulator's own command line
(:mod:`tuner.sim`): its arguments are passed to it untouched, and its exit statuses are vLLM's.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from tuner import __version__
from tuner.cli import best, confirm, dashboard, make_model, measure, pareto, run, show, sim, status, trials
from tuner.cli.output import Console
from tuner.errors import EXIT_INTERRUPTED, TunerError, UsageError


@dataclass(frozen=True)
class Command:
    """One row of the table: the sub-command's name and help, and its module's two functions.
    ``passthrough``: the arguments argparse does not know go to the command (it has no ``--help`` of its own)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[argparse.Namespace, Console], int]
    passthrough: bool = False


COMMANDS = (
    Command("run", "create or continue a study", run.add_arguments, run.handle),
    Command("resume", "continue a study after a stop", run.add_arguments, run.handle),
    Command("pareto", "the feasible non-dominated configurations", pareto.add_arguments, pareto.handle),
    Command("best", "export one configuration of the front", best.add_arguments, best.handle),
    Command("confirm", "re-measure the leading configurations", confirm.add_arguments, confirm.handle),
    Command("status", "studies and how far they are", status.add_arguments, status.handle),
    Command("trials", "every trial in one line", trials.add_arguments, trials.handle),
    Command("show", "one trial whole", show.add_arguments, show.handle),
    Command("measure", "measure one configuration once (no study)", measure.add_arguments, measure.handle),
    Command("dashboard", "a read-only web view of studies", dashboard.add_arguments, dashboard.handle),
    Command(
        "make-model",
        "write the tiny random model used by the demo and tests",
        make_model.add_arguments,
        make_model.handle,
    ),
    Command(
        "sim",
        "serve the simulated vLLM (vLLM's flags; see docs/simulator.md)",
        sim.add_arguments,
        sim.handle,
        passthrough=True,
    ),
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command; each sub-command's namespace holds its :class:`Command`."""
    p = _Parser(
        prog="tuner", description="Find the best vLLM server flags for a workload, under latency SLOs."
    )
    p.add_argument("--version", action="version", version=f"tuner {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        c = sub.add_parser(command.name, help=command.help, add_help=not command.passthrough)
        command.add_arguments(c)
        c.set_defaults(entry=command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    console = Console()
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv), console)
    except SystemExit as e:  # Console.abort, --help, --version
        return e.code if isinstance(e.code, int) else 0


def _dispatch(argv: list[str], console: Console) -> int:
    parser = build_parser()
    if not argv:  # as hatch does: the help, on stdout, exit 0
        console.print(parser.format_help())
        return 0
    try:
        args, extra = parser.parse_known_args(argv)
        command: Command = args.entry
        if extra and not command.passthrough:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.passthrough = extra
        _quiet_libraries()
        return command.handle(args, console)
    except TunerError as e:
        console.abort(str(e), e.exit_code)
    except KeyboardInterrupt:
        console.abort("interrupted", EXIT_INTERRUPTED)


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
