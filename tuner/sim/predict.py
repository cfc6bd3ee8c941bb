"""One configuration's predicted score: tuner's capacity rule run on the simulator, reduced to what a study
stores and compares (capacity, the scored step's latency percentiles, KV-cache tokens).

Contract:

* :func:`predict` runs :func:`tuner.sim.engine.capacity` (the same rule a real trial runs) for one
  :class:`SimConfig` and returns a :class:`Prediction`; a configuration vLLM would refuse is a prediction
  too (``failure`` set, not feasible, no metrics). Deterministic.
* :data:`PREDICTED_METRICS` are the metrics a prediction carries (the scored step's, by
  :meth:`tuner.measure.metrics.Summary.metric`'s names); :meth:`Prediction.to_dict` is its stored form and
  :meth:`Prediction.from_dict` reads it back (unknown keys ignored).
* :func:`perturbed` is a "wrong simulator": the hardware profile with its efficiency constants scaled and
  its memory reserve shifted (the warm-start benchmark's prior; a refit's candidate).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuner.config.workload import CapacitySpec
from tuner.sim.engine import SimConfig, SimWorkload, StartupError, capacity, plan_engine
from tuner.sim.hardware import GiB, Hardware

#: the scored step's metrics a prediction carries (capacity is ``output_throughput``)
PREDICTED_METRICS = (
    "output_throughput",
    "total_throughput",
    "request_throughput",
    "ttft_p50",
    "ttft_p90",
    "ttft_p99",
    "itl_p50",
    "itl_p90",
    "itl_p99",
    "tpot_p99",
    "e2e_p99",
)


@dataclass(frozen=True)
class Prediction:
    """The simulator's view of one configuration: ``feasible`` (some step met the SLO), the scored step's
    ``metrics`` (empty when it would not start), its ``level``, the KV cache's size in tokens and, for a
    configuration vLLM refuses, the ``failure`` class (``oom`` / ``invalid_config``)."""

    feasible: bool
    metrics: dict[str, float] = field(default_factory=dict)
    level: float | None = None
    kv_tokens: int | None = None
    failure: str | None = None

    @property
    def capacity(self) -> float:
        """Output tok/s of the scored step when it meets the SLO; 0 otherwise."""
        return self.metrics.get("output_throughput", 0.0) if self.feasible else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The stored form (JSON-safe: non-finite figures left out)."""
        return {
            "feasible": self.feasible,
            "metrics": {k: v for k, v in self.metrics.items() if math.isfinite(v)},
            "level": self.level,
            "kv_tokens": self.kv_tokens,
            "failure": self.failure,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prediction:
        """:meth:`to_dict`'s form read back; a malformed field reads as missing."""
        metrics = d.get("metrics")
        level, kv, failure = d.get("level"), d.get("kv_tokens"), d.get("failure")
        return cls(
            feasible=d.get("feasible") is True,
            metrics={
                str(k): float(v)
                for k, v in (metrics.items() if isinstance(metrics, Mapping) else ())
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
            level=float(level) if isinstance(level, int | float) and not isinstance(level, bool) else None,
            kv_tokens=kv if isinstance(kv, int) and not isinstance(kv, bool) else None,
            failure=failure if isinstance(failure, str) else None,
        )


def predict(
    config: SimConfig,
    workload: SimWorkload,
    slo: Mapping[str, float],
    cap: CapacitySpec | None = None,
    *,
    max_failed_fraction: float | None = None,
) -> Prediction:
    """Tuner's capacity rule for ``config`` on the simulator (module docstring)."""
    try:
        plan = plan_engine(config)
    except StartupError as e:
        return Prediction(feasible=False, failure=e.failure)
    kw = {} if max_failed_fraction is None else {"max_failed_fraction": max_failed_fraction}
    res = capacity(plan, workload, slo, cap, **kw)
    level, summary = res.steps[res.scored]
    metrics = {}
    for name in PREDICTED_METRICS:
        try:
            metrics[name] = float(summary.metric(name))
        except KeyError:
            continue
    return Prediction(feasible=res.feasible, metrics=metrics, level=level, kv_tokens=plan.kv_tokens)


def perturbed(hw: Hardware, *, scale: Mapping[str, float], reserve_gib: float = 0.0) -> Hardware:
    """``hw`` with each named efficiency constant multiplied by ``scale[name]`` (``{"gemm": 1.25}``) and
    ``reserve_gib`` GiB added to the memory vLLM cannot use. Raises ``KeyError`` for an unknown constant."""
    eff = hw.efficiency
    names = {f.name for f in dataclasses.fields(eff)}
    unknown = set(scale) - names
    if unknown:
        raise KeyError(f"unknown efficiency constant(s): {sorted(unknown)}")
    eff = dataclasses.replace(eff, **{k: getattr(eff, k) * v for k, v in scale.items()})
    reserve = max(0, hw.reserve_bytes + int(reserve_gib * GiB))
    return dataclasses.replace(hw, efficiency=eff, reserve_bytes=reserve)
