"""When conversations start in the open-loop mode. Pure: numbers in, numbers out (seeded ``numpy`` draws).

Every process yields send offsets in seconds from the start of a phase, non-decreasing, the first one 0:

* ``poisson``  — gaps exponential with mean ``1 / rate``, as ``vllm bench serve`` makes them;
* ``constant`` — gaps of exactly ``1 / rate``;
* ``gamma``    — gaps gamma-distributed with shape ``burstiness`` and mean ``1 / rate`` (the rate is kept):
  the coefficient of variation of the gaps is ``1 / sqrt(burstiness)``, so ``burstiness < 1`` is burstier
  than Poisson, ``> 1`` steadier, and ``1`` is Poisson in law (as ``vllm bench serve --burstiness``);
* ``trace``    — a replayed trace: each conversation's own ``at_s``, divided by ``scale`` (``scale 2`` sends
  the same traffic twice as fast), made relative to the first conversation sent. A trace that wraps
  around (a step that starts in its middle and runs past its end) goes on from its start with no gap.

``rate = inf`` sends everything at once (offset 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: gaps are drawn this many at a time
_BATCH = 1024

ArrivalKind = Literal["poisson", "constant", "gamma", "trace"]


def _check_rate(rate: float) -> None:
    if not rate > 0 or math.isnan(rate):
        raise ValueError(f"request rate must be positive, got {rate}")


@dataclass(frozen=True)
class Arrivals:
    """An arrival process (see the module docstring). ``rate`` (conversation starts per second) is needed by
    every kind but ``trace``; ``scale`` only by ``trace``. ``ValueError`` on a bad combination."""

    kind: ArrivalKind = "poisson"
    rate: float | None = None
    burstiness: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind == "trace":
            if not (self.scale > 0 and math.isfinite(self.scale)):
                raise ValueError(f"trace scale must be a positive number, got {self.scale}")
            return
        if self.rate is None:
            raise ValueError(f"{self.kind} arrivals need a rate")
        _check_rate(self.rate)
        if not (self.burstiness > 0 and math.isfinite(self.burstiness)):
            raise ValueError(f"burstiness must be a positive number, got {self.burstiness}")

    def offsets(self, rng: np.random.Generator, at_s: Iterable[float | None] = ()) -> Iterator[float]:
        """An endless stream of send offsets (for ``trace``: one per element of ``at_s``, which it needs)."""
        if self.kind == "trace":
            return trace_offsets(at_s, self.scale)
        assert self.rate is not None
        if self.kind == "constant":
            return constant_offsets(self.rate)
        if self.kind == "gamma" and self.burstiness != 1.0:
            return gamma_offsets(self.rate, self.burstiness, rng)
        return poisson_offsets(self.rate, rng)

    def describe(self) -> str:
        """``2.5 req/s``, ``2.5 req/s (gamma, burstiness 0.5)``, ``trace x2``."""
        if self.kind == "trace":
            return f"trace x{self.scale:g}"
        how = {"poisson": "", "constant": " (constant)", "gamma": f" (gamma, burstiness {self.burstiness:g})"}
        return f"{self.rate:g} req/s{how[self.kind]}"


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
    return _from_gaps(rate, lambda: rng.exponential(1.0 / rate, size=_BATCH))


def gamma_offsets(rate: float, burstiness: float, rng: np.random.Generator) -> Iterator[float]:
    """Gamma gaps of shape ``burstiness`` and mean ``1 / rate``: CV of the gaps ``1 / sqrt(burstiness)``."""
    _check_rate(rate)
    if not burstiness > 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    return _from_gaps(rate, lambda: rng.gamma(burstiness, 1.0 / (rate * burstiness), size=_BATCH))


def constant_offsets(rate: float) -> Iterator[float]:
    """Offsets ``0, 1/rate, 2/rate, ...`` (computed as ``i / rate``: no drift from summing)."""
    _check_rate(rate)
    i = 0
    while True:
        yield 0.0 if math.isinf(rate) else i / rate
        i += 1


def trace_offsets(at_s: Iterable[float | None], scale: float) -> Iterator[float]:
    """Replay ``at_s`` (seconds, non-decreasing within the trace) at ``scale`` x its speed, the first one at
    0; a step back in time (the trace wrapping around) adds no gap. ``ValueError`` on a missing time."""
    if not scale > 0:
        raise ValueError(f"trace scale must be positive, got {scale}")
    t = 0.0
    prev: float | None = None
    for at in at_s:
        if at is None:
            raise ValueError("trace arrivals need every conversation's at_s")
        if prev is not None and at > prev:
            t += (at - prev) / scale
        prev = at
        yield t


def _from_gaps(rate: float, draw: Callable[[], np.ndarray]) -> Iterator[float]:
    t = 0.0
    yield t
    if math.isinf(rate):
        while True:
            yield 0.0
    while True:
        for gap in draw().tolist():
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
