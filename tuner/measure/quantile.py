"""How sure a measured percentile is, and when a step's verdict is settled early. Pure.

A step's p99 TTFT is one order statistic of its requests. Its **interval** is distribution-free: the number
of samples at or below the true quantile ``xi_q`` is Binomial(n, q), so ``x_(l) <= xi_q <= x_(u)`` with
probability >= ``confidence`` for the ranks :func:`interval_ranks` gives (two-sided, equal tails). Too few
samples for an upper rank means no upper bound (``inf``): :func:`min_samples` is the least ``n`` that has
one.

A verdict against a limit is ``pass`` (the interval lies at or below it), ``fail`` (above it) or
``uncertain`` (the limit lies inside the interval); :func:`judge` gives it together with the point estimate
(numpy's linear interpolation, as :mod:`tuner.measure.metrics` reports it).

**Settled early** (:func:`settled_broken`): once ``k`` of the step's ``n`` planned samples are known to
exceed the limit, the step's point estimate of ``p_q`` exceeds it whatever the others turn out to be as
soon as ``k >= n - floor(q * (n - 1))``: with linear interpolation the estimate lies between the samples of
ranks ``floor(q(n-1))`` and ``ceil(q(n-1))`` (0-based), and both are then among the ``k`` largest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: two-sided confidence of a percentile's interval (each tail 5 %)
CONFIDENCE = 0.90

Verdict = Literal["pass", "fail", "uncertain"]


def interval_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int | None, int | None]:
    """1-based ranks ``(l, u)`` of the order statistics bounding the ``q`` quantile of ``n`` samples with
    ``confidence`` (two-sided, equal tails); ``None`` where ``n`` is too small for that bound. ``l`` is the
    largest rank with ``P(Bin(n, q) <= l - 1) <= tail``, ``u`` the smallest with ``P(Bin(n, q) <= u - 1) >=
    1 - tail``; one vectorised binomial CDF (pooled ITL samples run to tens of thousands)."""
    if n <= 0:
        return None, None
    from scipy.stats import binom

    tail = (1.0 - confidence) / 2.0
    cdf = binom.cdf(np.arange(n), n, q)  # cdf[k] = P(Bin <= k), k = rank - 1
    below = np.flatnonzero(cdf <= tail)
    above = np.flatnonzero(cdf >= 1.0 - tail)
    low = int(below[-1]) + 1 if below.size else None
    high = int(above[0]) + 1 if above.size else None
    return low, high


def min_samples(q: float, confidence: float = CONFIDENCE) -> int:
    """The least number of samples whose ``q`` quantile has an upper bound at ``confidence``: the
    largest sample bounds it once ``1 - q**n >= 1 - tail``."""
    tail = (1.0 - confidence) / 2.0
    return max(1, math.ceil(math.log(tail) / math.log(q)))


@dataclass(frozen=True)
class Judgement:
    """A percentile against its limit: the point estimate, its interval and the verdict."""

    estimate: float
    low: float
    high: float
    verdict: Verdict

    def to_dict(self) -> dict[str, float | str | None]:
        return {
            "estimate": _finite(self.estimate),
            "low": _finite(self.low),
            "high": _finite(self.high),
            "verdict": self.verdict,
        }


def judge(samples: Sequence[float] | np.ndarray, q: float, limit: float) -> Judgement:
    """The ``q`` quantile of ``samples`` against ``limit`` (see the module docstring). No samples: a
    ``fail`` with ``nan`` figures (a step that measured nothing does not meet an SLO)."""
    a = np.sort(np.asarray(samples, dtype=float))
    if a.size == 0:
        return Judgement(math.nan, math.nan, math.nan, "fail")
    estimate = float(np.percentile(a, q * 100.0))
    lr, ur = interval_ranks(int(a.size), q)
    low = float(a[lr - 1]) if lr is not None else -math.inf
    high = float(a[ur - 1]) if ur is not None else math.inf
    if high <= limit:
        verdict: Verdict = "pass"
    elif low > limit:
        verdict = "fail"
    else:
        verdict = "uncertain"
    return Judgement(estimate, low, high, verdict)


def settled_broken(exceeding: int, planned: int, q: float) -> bool:
    """Whether ``exceeding`` samples known to be over a limit, out of ``planned``, already put the point
    estimate of the ``q`` quantile over it (see the module docstring)."""
    if planned <= 0:
        return False
    return exceeding >= planned - math.floor(q * (planned - 1))


def quantile_of(metric: str) -> float | None:
    """``0.99`` for ``ttft_p99``, ``0.5`` for ``itl_p50``; None for a name without a percentile."""
    _, _, tail = metric.rpartition("_p")
    return int(tail) / 100.0 if tail.isdigit() and 0 < int(tail) < 100 else None


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
