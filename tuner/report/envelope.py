"""Every measured step of a study as a point, and the step-level front over them. Pure (no study access).

In capacity mode each configuration is measured at several loads inside one server start; each step is a
point of the configuration's latency-throughput curve. The **step-level front** (the envelope of every
curve, as vLLM's ``plot_pareto`` and NVIDIA's AIConfigurator draw tokens/s against latency) is, for each
throughput, the configuration and load with the lowest latency: the steps no other step beats on both
output throughput (higher) and the latency followed (lower). Of identical points the first in trial order
stays. Every step is a point, whether or not it meets the SLO; its verdict is the capacity rule's own
(:func:`tuner.measure.capacity.meets`, per limit :func:`tuner.measure.slo.within`). A step cut short once
its verdict was settled (``pruned``) is a point of its curve but not of the front: its figures cover only
the requests done when it stopped.

The latency followed (``primary``) is the study's first minimised objective, else its first SLO limit's
metric, else ``ttft_p99``. A trial in fixed mode is one point (its one measurement). Trials told as failures
have no point; they are listed in :attr:`StepView.failed` with their failure class.

A row (:func:`step_row`, the JSON of ``tuner pareto --steps --format json``)::

    {"trial": 15, "is_baseline": false, "load": {"concurrency": 64, "requests": 256},
     "output_throughput": 6450.0, "latency": {"ttft_p99": 1066.0, "itl_p99": 35.2},
     "within_slo": {"ttft_p99": false, "itl_p99": true}, "meets_slo": false, "scored": false,
     "pruned": null, "params": {...}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tuner.config.spec import Slo
from tuner.config.workload import Workload
from tuner.measure.capacity import meets
from tuner.measure.metrics import Summary
from tuner.measure.slo import within
from tuner.search.record import TrialRecord

DEFAULT_LATENCY = "ttft_p99"


@dataclass(frozen=True)
class Step:
    """One measured step of one trial."""

    trial: int
    index: int  # its place in the trial's steps
    load: Mapping[str, Any]  # as stored: concurrency or request_rate, requests or duration_s
    throughput: float  # output tok/s
    latency: Mapping[str, float | None]  # ms, for each latency the view follows (None: no figure)
    within: Mapping[str, bool]  # each SLO limit: is the figure within it
    meets: bool  # the capacity rule's verdict: every limit held and few enough requests failed
    scored: bool  # the step that scored the trial
    pruned: str | None  # why the step was cut short once its verdict was settled (no full measurement)
    is_baseline: bool
    params: Mapping[str, Any]  # what the trial ran with (the baseline: the flags it pins, usually none)


@dataclass(frozen=True)
class StepView:
    """Every step of a study, what the view follows, and the trials that have no point."""

    steps: list[Step]
    failed: list[tuple[int, str]]  # (trial, failure class) for each trial told as a failure
    primary: str  # the latency of the step-level front
    latencies: list[str]  # primary first, then each SLO limit's metric
    slo: dict[str, float]  # metric -> limit (ms)

    def front(self, latency: str | None = None) -> list[Step]:
        """The step-level front on ``latency`` (default: ``primary``), lowest throughput first."""
        return envelope(self.steps, latency or self.primary)


def slo_limits(spec: Mapping[str, Any] | None) -> dict[str, float]:
    """``{"ttft_p99": 1000.0, ...}`` from a stored study spec (``Slo.limits``); {} when it has none or
    cannot be read."""
    slo = (spec or {}).get("slo")
    if not isinstance(slo, dict):
        return {}
    try:
        return Slo.model_validate({k: v for k, v in slo.items() if k in Slo.model_fields}).limits()
    except ValidationError:
        return {}


def max_failed_fraction(spec: Mapping[str, Any] | None) -> float:
    """The stored spec's ``workload.max_failed_fraction``, else the file's default."""
    workload = (spec or {}).get("workload")
    value = workload.get("max_failed_fraction") if isinstance(workload, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    default = Workload.model_fields["max_failed_fraction"].default
    return float(default)


def primary_latency(names: Sequence[str], maximize: Sequence[bool], slo: Mapping[str, float]) -> str:
    """The study's first minimised objective, else its first SLO limit's metric, else ``ttft_p99``."""
    for name, up in zip(names, maximize, strict=False):
        if not up:
            return name
    return next(iter(slo), DEFAULT_LATENCY)


def build(
    records: Sequence[TrialRecord],
    names: Sequence[str],
    maximize: Sequence[bool],
    spec: Mapping[str, Any] | None,
) -> StepView:
    """The :class:`StepView` of a study's finished trials (``records``: finished trials, in trial order)
    whose objectives are ``names`` (``maximize[i]``: larger is better) and stored spec is ``spec``."""
    slo = slo_limits(spec)
    primary = primary_latency(names, maximize, slo)
    latencies = [primary, *(m for m in slo if m != primary)]
    allowed = max_failed_fraction(spec)
    steps: list[Step] = []
    failed: list[tuple[int, str]] = []
    for rec in records:
        if rec.failed:
            failed.append((rec.number, rec.failure or rec.status or "failed"))
            continue
        steps += _trial_steps(rec, latencies, slo, allowed)
    return StepView(steps, failed, primary, latencies, slo)


def _trial_steps(
    rec: TrialRecord, latencies: Sequence[str], slo: Mapping[str, float], allowed: float
) -> list[Step]:
    result = rec.result
    if result is None:
        return []
    stored = list(result.steps) or ([result.metrics] if result.metrics else [])
    scored = result.scored_step if result.steps else 0
    out: list[Step] = []
    for i, raw in enumerate(stored):
        s = Summary.from_dict(raw)
        if not math.isfinite(s.output_throughput_tok_s):
            continue
        out.append(
            Step(
                trial=rec.number,
                index=i,
                load=dict(s.load),
                throughput=s.output_throughput_tok_s,
                latency={m: _figure(s, m) for m in latencies},
                within={m: within(s.metric(m), limit) for m, limit in slo.items()},
                meets=meets(s, slo, allowed),
                scored=i == scored,
                pruned=s.pruned,
                is_baseline=rec.is_baseline,
                params=dict(rec.run_params),
            )
        )
    return out


def _figure(s: Summary, metric: str) -> float | None:
    try:
        v = s.metric(metric)
    except KeyError:
        return None
    return v if math.isfinite(v) else None


def envelope(steps: Sequence[Step], latency: str) -> list[Step]:
    """The steps no other step beats on throughput (higher) and ``latency`` (lower), lowest throughput
    first; steps without a figure for ``latency``, and steps cut short (``pruned``: their figures cover only
    the requests done when the step stopped), take no part."""
    known = [s for s in steps if s.latency.get(latency) is not None and s.pruned is None]
    order = sorted(known, key=lambda s: (-s.throughput, _lat(s, latency), s.trial, s.index))
    out: list[Step] = []
    best = math.inf
    for s in order:
        if _lat(s, latency) < best:
            out.append(s)
            best = _lat(s, latency)
    return out[::-1]


def _lat(s: Step, latency: str) -> float:
    v = s.latency.get(latency)
    return math.inf if v is None else v


#: the keys of a stored step's load that give its level, in the order looked for
LEVEL_KEYS = ("concurrency", "request_rate", "trace_scale")


def load_level(load: Mapping[str, Any]) -> float | None:
    """The load a step offered: its concurrency, else its request rate (req/s), else the speed-up of a
    replayed trace (``trace_scale``); None when not stored."""
    for key in LEVEL_KEYS:
        v = _number(load.get(key))
        if v is not None:
            return v
    return None


def load_kind(load: Mapping[str, Any]) -> str | None:
    """Which of :data:`LEVEL_KEYS` gives the step's level (:func:`load_level`), or None."""
    return next((k for k in LEVEL_KEYS if _number(load.get(k)) is not None), None)


def load_text(load: Mapping[str, Any], short: bool = False) -> str:
    """``concurrency 32``, ``2.5 req/s``, ``4 req/s gamma b=0.5``, ``2.5 req/s constant``, ``trace x2``
    (``short``: ``32``, ``2.5/s``, ``x2``); ``-`` when not stored."""
    level, kind = load_level(load), load_kind(load)
    if level is None:
        return "-"
    figure = f"{level:g}"
    if kind == "concurrency":
        return figure if short else f"concurrency {figure}"
    if kind == "trace_scale":
        return f"x{figure}" if short else f"trace x{figure}"
    if short:
        return f"{figure}/s"
    arrivals = load.get("arrivals")
    how = f" {arrivals}" if isinstance(arrivals, str) and arrivals != "poisson" else ""
    burstiness = _number(load.get("burstiness"))
    if arrivals == "gamma" and burstiness is not None:
        how += f" b={burstiness:g}"
    return f"{figure} req/s{how}"


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def step_row(step: Step) -> dict[str, Any]:
    """One step as a report row (see the module docstring)."""
    return {
        "trial": step.trial,
        "is_baseline": step.is_baseline,
        "load": dict(step.load),
        "output_throughput": step.throughput,
        "latency": dict(step.latency),
        "within_slo": dict(step.within),
        "meets_slo": step.meets,
        "scored": step.scored,
        "pruned": step.pruned,
        "params": dict(step.params),
    }
