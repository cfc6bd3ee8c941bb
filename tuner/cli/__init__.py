"""The command line: a table of commands, each thin (see :mod:`tuner.cli.main`)."""

from tuner.cli.main import main

__all__ = ["main"]
