"""Progress for a person: :class:`RichReporter`, a :class:`tuner.progress.Reporter` drawn with rich.

On a terminal it keeps one live line — ``trial 3/6 · load · 0:42 · best so far: ...`` — whose elapsed time
ticks, and prints one line per finished trial above it. When ``file`` is not a terminal it draws nothing
live: finished trials and messages are printed as plain lines (useful in ``nohup`` logs), phases are not.
Use it as a context manager (or call :meth:`close`) so the live line is removed on exit.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from tuner.progress import FinishedTrial


class _Line:
    """The live line; rendered on every refresh so the elapsed time moves."""

    def __init__(self) -> None:
        self.trial = ""
        self.phase = ""
        self.detail = ""
        self.best = ""
        self.started = time.monotonic()

    def __rich__(self) -> Text:
        elapsed = int(time.monotonic() - self.started)
        parts = [
            self.trial,
            self.phase + (f" ({self.detail})" if self.detail else ""),
            f"{elapsed // 60}:{elapsed % 60:02d}",
        ]
        if self.best:
            parts.append(f"best so far: {self.best}")
        return Text(" · ".join(p for p in parts if p), style="cyan")


class RichReporter:
    """A live progress line on a terminal, plain lines elsewhere (see the module docstring)."""

    def __init__(self, file: IO[str] | None = None, *, force_terminal: bool | None = None) -> None:
        self._console = Console(
            file=file or sys.stderr, force_terminal=force_terminal, highlight=False, soft_wrap=True
        )
        self._live_enabled = self._console.is_terminal
        self._line = _Line()
        self._live: Live | None = None

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the live line."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _ensure_live(self) -> None:
        if self._live_enabled and self._live is None:
            self._live = Live(self._line, console=self._console, refresh_per_second=2, transient=True)
            self._live.start()

    def trial_started(self, number: int, total: int | None, params: dict[str, object]) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "vLLM defaults"
        self._line.trial = f"trial {number}" + (f" (budget {total})" if total else "")
        self._line.phase, self._line.detail = "checking", ""
        self._line.started = time.monotonic()
        if self._live_enabled:
            self._ensure_live()
            self._console.print(Text(f"trial {number}: {shown}", style="dim"))

    def phase(self, name: str, detail: str = "") -> None:
        self._line.phase, self._line.detail = name, detail

    def trial_finished(self, number: int, status: str, finished: FinishedTrial) -> None:
        from tuner.report.pareto import best_so_far  # optuna: only once a study runs

        elapsed = int(time.monotonic() - self._line.started)
        best = best_so_far(finished.study, finished.metric_names)
        head = headline(status, finished)
        style = "green" if status == "ok" else "yellow"
        shown = f"{head} · best so far: {best}" if best else head
        self._console.print(Text(f"trial {number} {status} in {elapsed}s: {shown}", style=style))
        if best:
            self._line.best = best
        self._line.phase = "between trials"

    def message(self, text: str) -> None:
        self._console.print(Text(text))


def headline(status: str, finished: FinishedTrial) -> str:
    """A finished trial in words: its message when it failed, else its values and whether it met the SLOs."""
    from tuner.report.pareto import format_values

    if status != "ok":
        return finished.message or status
    verdict = "feasible" if finished.feasible else "SLO broken"
    return f"{format_values(finished.metric_names, finished.values)} ({verdict})"
