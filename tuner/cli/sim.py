"""``tuner sim --model DIR [vLLM flags] [--sim-hardware H100 ...]``: serve the simulated vLLM. Every argument
after ``sim`` goes to :mod:`tuner.sim` untouched; it parses them as vLLM does. ``--help`` prints the
simulator's own help under the name ``tuner sim``."""

from __future__ import annotations

import argparse

from tuner.cli.output import Console


def add_arguments(c: argparse.ArgumentParser) -> None:
    """None of its own: the table passes the arguments argparse does not know as ``args.passthrough``."""


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.sim.__main__ import main as sim_main

    if {"-h", "--help"} & set(args.passthrough):
        from tuner.sim.args import build_parser

        parser = build_parser()
        parser.prog = "tuner sim"
        console.print(parser.format_help())
        return 0
    return sim_main(args.passthrough)
