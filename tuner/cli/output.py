"""The one place that writes for a person: :class:`Console`.

Contract: results (tables, JSON, exported commands) go to ``out`` (stdout); notes, warnings and errors go to
``err`` (stderr), each on one line: ``tuner: warning: ...``, ``tuner: error: ...``. :meth:`Console.abort` is
the one way a command fails with a message: it prints the error line and raises ``SystemExit(code)`` (the
exit statuses of :mod:`tuner.errors`); it never shows a traceback. With ``json_mode`` (a command sets it for
``--json`` output) the notes are suppressed so that stdout stays one parseable JSON document.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from typing import IO, Any, NoReturn

from rich.console import Console as RichConsole
from rich.console import RenderableType

from tuner.errors import EXIT_FAILURE

PROG = "tuner"
#: the width of reports written to a file or a pipe (``COLUMNS`` overrides it)
DEFAULT_WIDTH = 100


def one_line(text: object) -> str:
    """``text`` with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(text).split())


class Console:
    """Output for the CLI (see the module docstring)."""

    def __init__(
        self, out: IO[str] | None = None, err: IO[str] | None = None, *, json_mode: bool = False
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.json_mode = json_mode

    def print(self, text: str) -> None:
        """A result line on stdout."""
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    def info(self, text: str) -> None:
        """A note on stderr (silent in JSON mode)."""
        if not self.json_mode:
            self.err.write(f"{one_line(text)}\n")
            self.err.flush()

    def warn(self, text: str) -> None:
        self.err.write(f"{PROG}: warning: {one_line(text)}\n")
        self.err.flush()

    def error(self, text: str) -> None:
        self.err.write(f"{PROG}: error: {one_line(text)}\n")
        self.err.flush()

    def json(self, data: Any) -> None:
        """One JSON document on stdout (non-finite numbers written as null)."""
        self.print(json.dumps(_finite(data), indent=2, sort_keys=False))

    def width(self) -> int:
        """The columns a report may use: the terminal's, else ``COLUMNS``, else :data:`DEFAULT_WIDTH`."""
        if self.out.isatty():
            return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
        columns = os.environ.get("COLUMNS", "")
        return int(columns) if columns.isdigit() and int(columns) > 0 else DEFAULT_WIDTH

    def render(self, renderable: RenderableType, width: int | None = None) -> None:
        """A rich renderable (a table) on stdout within ``width`` columns (default :meth:`width`); plain
        text when stdout is not a terminal."""
        console = RichConsole(file=self.out, soft_wrap=False, width=width or self.width())
        console.print(renderable)

    def abort(self, message: str, code: int = EXIT_FAILURE) -> NoReturn:
        """Print ``tuner: error: <message>`` (one line) and exit with ``code``."""
        self.error(message)
        raise SystemExit(code)


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data
