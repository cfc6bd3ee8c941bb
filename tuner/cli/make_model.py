"""``tuner make-model DIR``: write a tiny random-weight Llama and its tokenizer (tests and the demo; no hub
needed); prints the folder."""

from __future__ import annotations

import argparse

from tuner.cli.output import Console
from tuner.errors import EXIT_FAILURE


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("dir")


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.modelgen import write_tiny_model

    try:
        path = write_tiny_model(args.dir)
    except OSError as e:
        console.abort(f"cannot write the model to {args.dir}: {e.strerror or e}", EXIT_FAILURE)
    console.print(str(path))
    return 0
