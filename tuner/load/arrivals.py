"""When requests are sent in the open-loop (request rate) mode. Pure: numbers in, numbers out.

Arrivals are a Poisson process, as ``vllm bench serve`` makes them: the first request goes at offset 0
and the gaps between requests are exponential with mean ``1 / rate``. ``rate = inf`` sends everything at
once (offset 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

#: gaps are drawn this many at a time by :func:`poisson_offsets`
_BATCH = 1024


def _check_rate(rate: float) -> None:
    if not rate > 0 or math.isnan(rate):
        raise ValueError(f"request rate must be positive, got {rate}")


def poisson_send_times(rate: float, count: int, rng: np.random.Generator) -> list[float]:
    """``count`` send offsets in seconds from the start, non-decreasing, the first one 0."""
    _check_rate(rate)
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    if count == 0:
        return []
    if math.isinf(rate):
        return [0.0] * count
    gaps = rng.exponential(1.0 / rate, size=count - 1)
    return [0.0, *np.cumsum(gaps).tolist()]


def poisson_offsets(rate: float, rng: np.random.Generator) -> Iterator[float]:
    """An endless stream of send offsets with the same law as :func:`poisson_send_times`."""
    _check_rate(rate)
    t = 0.0
    yield t
    if math.isinf(rate):
        while True:
            yield 0.0
    while True:
        for gap in rng.exponential(1.0 / rate, size=_BATCH).tolist():
            t += gap
            yield t


def poisson_send_times_until(rate: float, duration_s: float, rng: np.random.Generator) -> list[float]:
    """Every send offset of :func:`poisson_offsets` that falls before ``duration_s`` seconds."""
    if math.isinf(rate):
        raise ValueError("an infinite rate has no end within a duration")
    out: list[float] = []
    for t in poisson_offsets(rate, rng):
        if t >= duration_s:
            return out
        out.append(t)
    raise AssertionError("unreachable")  # pragma: no cover
