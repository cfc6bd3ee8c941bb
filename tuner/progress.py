"""Progress as an observer. The study loop and the trial runner report what happens; a reporter shows it.

:class:`NullReporter` does nothing (tests, ``--json``); :class:`tuner.cli.progress_rich.RichReporter` draws
a live line for a person and stays quiet when output is not a terminal. Anything with these methods is a
:class:`Reporter`. The study loop reports ``phase("saving")`` once the first attribute of a trial's result
is stored (the trial still RUNNING), and :meth:`Reporter.trial_finished` once the trial is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class FinishedTrial:
    """What the study loop knows of a trial it has just told."""

    message: str  # the result's message ("" for none)
    feasible: bool  # every SLO met
    values: Sequence[float] | None  # the objective values told to Optuna
    metric_names: Sequence[str]  # the objectives' metric names, in the order of ``values``
    study: optuna.Study  # the study it was told to (for the best so far)


class Reporter(Protocol):
    def trial_started(self, number: int, total: int | None, params: dict[str, object]) -> None: ...

    def phase(self, name: str, detail: str = "") -> None: ...

    def trial_finished(self, number: int, status: str, finished: FinishedTrial) -> None: ...

    def message(self, text: str) -> None: ...


class NullReporter:
    """Says nothing."""

    def trial_started(self, number: int, total: int | None, params: dict[str, object]) -> None:
        pass

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def trial_finished(self, number: int, status: str, finished: FinishedTrial) -> None:
        pass

    def message(self, text: str) -> None:
        pass
