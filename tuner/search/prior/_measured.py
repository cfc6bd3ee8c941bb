"""What a trial measured, by the names predictions use, and a prediction's relative error against it.

Pure: :func:`measured_metrics` reads a stored scored summary, :func:`prediction_errors` compares; both the
per-trial errors (:mod:`tuner.search.prior._predictions`) and the refit's observations
(:mod:`tuner.search.prior._refit`) read a measurement through them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tuner.measure.metrics import Summary
from tuner.sim.predict import PREDICTED_METRICS, Prediction


def prediction_errors(predicted: Prediction, measured: Mapping[str, float]) -> dict[str, float]:
    """Relative error of each predicted metric that was measured: ``predicted / measured - 1`` (so +0.2:
    the simulator said 20 % more). Metrics missing or zero on either side are left out."""
    out: dict[str, float] = {}
    for k, m in measured.items():
        p = predicted.metrics.get(k)
        if p is not None and m and math.isfinite(m) and math.isfinite(p):
            out[k] = p / m - 1.0
    return out


def measured_metrics(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """A stored scored summary (:meth:`tuner.measure.metrics.Summary.to_dict`) by the names predictions use
    (``output_throughput``, ``ttft_p99`` ..., :meth:`tuner.measure.metrics.Summary.metric`'s); what it lacks
    is left out."""
    if not summary:
        return {}
    try:
        s = Summary.from_dict(summary)
    except (TypeError, ValueError, AttributeError):  # a malformed stored record reads as nothing measured
        return {}
    values = {name: s.metric(name) for name in PREDICTED_METRICS}
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}
