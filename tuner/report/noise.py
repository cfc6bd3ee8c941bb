"""How much a configuration's score moves between server starts: the spread of a trial and its repeats. Pure.

``tuner confirm`` re-measures the leading configurations, each repeat a trial of its own with ``repeat_of``
naming the trial it repeats (:mod:`tuner.search.confirm`). Here the first objective's score of an original
trial and of its repeats become one :class:`Spread`, and :func:`within_noise` says whether two of them can
be told apart.

* **Score** — the first objective's measured value (``TrialRecord.scored_values[0]``), for the original
  and for every finished repeat. A repeat that failed (``TrialRecord.failed``) counts too, with the value
  told for it when it was told one (studies before failures were PRUNED: 0 tok/s, or its latency's failure
  value), else :func:`failed_score` (0 for a maximised objective, infinity for a minimised one): a
  configuration that does not start again on a re-run is not a confirmed winner.
* **Originals** — finished trials that are not repeats, were measured (not failed) and were not
  infeasible; repeats of anything else are left out.
* **Spread** — ``n`` scores, their mean and their range (``low``, ``high``). The range, not a standard error
  or a t interval: for the 2-4 scores a confirm gives, a 95 % t interval is 4-13 standard deviations wide and
  says nothing, while the range is what was seen.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from tuner.report.fmt import fmt_num
from tuner.search.record import TrialRecord


@dataclass(frozen=True)
class Spread:
    """The first objective's score of trial ``trial`` over it and its repeats: ``n`` scores, their mean,
    the lowest and the highest."""

    trial: int
    n: int
    mean: float
    low: float
    high: float

    @property
    def half_range(self) -> float:
        """Half the range: the ``±`` shown beside the mean."""
        return (self.high - self.low) / 2.0

    @property
    def confirmed(self) -> bool:
        """Measured more than once."""
        return self.n > 1

    def describe(self, unit: str = "") -> str:
        """``4,504 ± 40 tok/s`` (the mean ± half the range; no ``±`` for a single score)."""
        text = _grouped(self.mean) + (f" ± {_grouped(self.half_range)}" if self.confirmed else "")
        return f"{text} {unit}".rstrip()

    def to_dict(self) -> dict[str, float | int]:
        return {"trial": self.trial, "n": self.n, "mean": self.mean, "low": self.low, "high": self.high}


def failed_score(maximize: bool) -> float:
    """The score of a failed repeat told without values: 0 (maximised: it delivered nothing), else
    infinity (minimised: no latency it reached can be named)."""
    return 0.0 if maximize else math.inf


def spreads(records: Iterable[TrialRecord], maximize: bool = True) -> dict[int, Spread]:
    """The :class:`Spread` of every scored original trial (see the module docstring), keyed by its number;
    ``n`` is 1 for a trial without repeats. ``maximize``: the first objective is maximised."""
    done = sorted((r for r in records if r.finished), key=lambda r: r.number)
    scores: dict[int, list[float]] = {
        r.number: [r.scored_values[0]]
        for r in done
        if r.scored_values and r.repeat_of is None and r.feasible is not False
    }
    for r in done:
        if r.repeat_of is None or r.repeat_of not in scores:
            continue
        if r.failed:
            scores[r.repeat_of].append(r.values[0] if r.values else failed_score(maximize))
        elif r.scored_values:
            scores[r.repeat_of].append(r.scored_values[0])
    return {n: Spread(n, len(s), statistics.fmean(s), min(s), max(s)) for n, s in sorted(scores.items())}


def within_noise(a: Spread, b: Spread) -> bool:
    """True when the ranges ``[low, high]`` of ``a`` and ``b`` overlap: some run of the one scored at least
    as well as some run of the other, so which is better is not settled by what was measured. A single score
    is a range of width 0 (it is within noise of a range that contains it)."""
    return a.low <= b.high and b.low <= a.high


def runner_up(picked: int, found: dict[int, Spread], maximize: bool) -> Spread | None:
    """The best other confirmed configuration by mean score (``maximize``: the highest), or None."""
    others = [s for n, s in found.items() if n != picked and s.confirmed]
    if not others:
        return None
    sign = -1.0 if maximize else 1.0
    return min(others, key=lambda s: (sign * s.mean, s.trial))


def noise_note(a: Spread, b: Spread, unit: str = "") -> str:
    """``trials 7 and 12 are within noise: 4,504 ± 40 vs 4,470 ± 55 tok/s``."""
    return (
        f"trials {a.trial} and {b.trial} are within noise: {a.describe()} vs {b.describe()} {unit}".rstrip()
    )


def _grouped(v: float) -> str:
    """``4,504`` for figures >= 1000, else :func:`tuner.report.fmt.fmt_num`."""
    return f"{v:,.0f}" if abs(v) >= 1000 else fmt_num(v)
