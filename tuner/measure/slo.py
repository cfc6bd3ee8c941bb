"""The one SLO check: whether a latency figure is within its limit. Pure.

Used by the capacity rule (a step's percentiles against the study's limits), by the per-request goodput
count of :mod:`tuner.measure.metrics`, and by the simulator's own summary. Limits are milliseconds keyed by
metric name (``ttft_p99``, ``itl_p99``, ``tpot_p50``, ``e2e_p90`` ...), as ``SLO.limits()`` gives them.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import numpy as np

RequestLatency = Literal["ttft", "tpot", "e2e"]


@overload
def within(value: float, limit: float) -> bool: ...
@overload
def within(value: np.ndarray, limit: float) -> np.ndarray: ...
def within(value: float | np.ndarray, limit: float) -> bool | np.ndarray:
    """``value <= limit``; ``nan`` (no figure) is never within. Elementwise for a numpy array."""
    if isinstance(value, np.ndarray):
        return value <= limit
    return bool(value <= limit)


def ratio(value: float, limit: float) -> float:
    """``value / limit``: 1.0 or less is within; ``nan`` (no figure) counts as broken (``inf``)."""
    return value / limit if not math.isnan(value) else math.inf


def request_latency(limit_name: str) -> RequestLatency | None:
    """The per-request latency a limit bounds for goodput: ``ttft_*`` -> TTFT, ``tpot_*`` and ``itl_*`` ->
    the request's TPOT (ITL is a pooled figure; a request's own mean gap stands for it), ``e2e_*`` -> E2E;
    other names bound nothing per request (``None``)."""
    base = limit_name.split("_")[0]
    if base == "ttft":
        return "ttft"
    if base in ("tpot", "itl"):
        return "tpot"
    if base == "e2e":
        return "e2e"
    return None
