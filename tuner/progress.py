"""Progress as an observer. The study and the trial runner report phases; a reporter shows them.

:class:`NullReporter` does nothing (tests, ``--json``); :class:`RichReporter` draws a live line for a person
and stays quiet when output is not a terminal. Anything with these methods is a :class:`Reporter`.
"""

from __future__ import annotations

from typing import Protocol

#: the phases of one trial, in order
PHASES = ("checking", "starting server", "warm-up", "load", "stopping", "saving")


class Reporter(Protocol):
    def trial_started(self, number: int, total: int | None, params: dict[str, object]) -> None: ...

    def phase(self, name: str, detail: str = "") -> None: ...

    def trial_finished(self, number: int, status: str, headline: str) -> None: ...

    def message(self, text: str) -> None: ...


class NullReporter:
    """Says nothing."""

    def trial_started(self, number: int, total: int | None, params: dict[str, object]) -> None:
        pass

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def trial_finished(self, number: int, status: str, headline: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass
