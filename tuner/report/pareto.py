"""Read a finished (or running) study back: the Pareto front, every trial as a point, the picks. No writes.

The front is Optuna's own: ``study.best_trials`` — COMPLETE trials that satisfy every constraint (so no
failed trial and no SLO breaker) and that no other such trial dominates. Nothing here decides dominance.

A row (:func:`pareto_rows`, the JSON of ``tuner pareto --format json``)::

    {"trial": 7, "params": {...}, "values": {"output_throughput": 812.0, "ttft_p99": 640.0},
     "metrics": {... Summary.to_dict() ...}, "vs_baseline": {"output_throughput": 23.5, ...},
     "is_baseline": false, "flags": {...}, "steps": [...]}       # steps: capacity mode only

``params`` are the values the trial ran with (for the baseline: the flags it pins, usually none);
``vs_baseline`` is the percent change of each objective against the baseline trial (None without a measured
baseline).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError, UsageError
from tuner.measure.metrics import Summary
from tuner.report.fmt import fmt_num
from tuner.search.record import StoredResult, read, read_study

Pick = Literal["throughput", "latency", "knee"]
PICKS: tuple[str, ...] = ("throughput", "latency", "knee")


def metric_names(study: optuna.Study) -> list[str]:
    """The objective metric names stored with the study (``value_0``... when it was not made by tuner)."""
    names = read_study(study).metric_names
    if names is not None and len(names) == len(study.directions):
        return list(names)
    return [f"value_{i}" for i in range(len(study.directions))]


def unit(metric: str) -> str:
    """``tok/s`` for throughputs, ``ms`` for latencies."""
    if metric == "request_throughput":
        return "req/s"
    if metric.endswith("throughput") or metric == "goodput":
        return "tok/s"
    return "ms" if metric[:3] in ("ttf", "itl", "tpo", "e2e") else ""


def format_values(names: Sequence[str], values: Sequence[float] | None) -> str:
    """``output_throughput 812 tok/s, ttft_p99 640 ms``."""
    if not values:
        return "-"
    return ", ".join(f"{n} {fmt_num(v)} {unit(n)}".rstrip() for n, v in zip(names, values, strict=False))


def is_feasible(trial: FrozenTrial) -> bool:
    """COMPLETE and every constraint satisfied (Optuna's definition)."""
    return trial.state == TrialState.COMPLETE and all(c <= 0 for c in trial.constraints.values())


def is_failed(trial: FrozenTrial) -> bool:
    """COMPLETE but told as a failure (the configuration did not run or was refused)."""
    return trial.state == TrialState.COMPLETE and read(trial).failed


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The measured baseline (COMPLETE, status ok), the latest if there are several; else None."""
    found = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (r := read(t)).is_baseline and not r.failed
    ]
    return found[-1] if found else None


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Optuna's Pareto front (``study.best_trials``), best first by the first objective."""
    trials = list(study.best_trials)
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(trials, key=lambda t: (sign * t.values[0], t.number))


def change_vs(values: Sequence[float], base: Sequence[float] | None) -> list[float | None]:
    """Percent change of each value against the baseline's (None where the baseline is 0 or missing)."""
    if base is None:
        return [None] * len(values)
    return [
        None if b == 0 or not math.isfinite(b) else (v - b) / abs(b) * 100.0
        for v, b in zip(values, base, strict=False)
    ]


def row(trial: FrozenTrial, names: Sequence[str], base: FrozenTrial | None) -> dict[str, Any]:
    """One trial as a report row (see the module docstring)."""
    rec = read(trial)
    result = rec.result or StoredResult()
    values = list(trial.values or [])
    out: dict[str, Any] = {
        "trial": trial.number,
        "params": dict(rec.run_params),
        "values": dict(zip(names, values, strict=False)),
        "metrics": dict(result.metrics or {}),
        "vs_baseline": dict(
            zip(names, change_vs(values, base.values if base is not None else None), strict=False)
        ),
        "is_baseline": rec.is_baseline,
        "flags": dict(result.flags),
    }
    if result.steps:
        out["steps"] = [_step_point(s, names) for s in result.steps]
    return out


def _step_point(step: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    summary = Summary.from_dict(step)
    point: dict[str, Any] = {"load": step.get("load") or {}}
    for n in names:
        try:
            v = summary.metric(n)
        except KeyError:
            continue
        point[n] = v if math.isfinite(v) else None
    return point


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The feasible non-dominated trials as rows, best first by the first objective."""
    names = metric_names(study)
    base = baseline_trial(study)
    return [row(t, names, base) for t in front(study)]


@dataclass(frozen=True)
class Point:
    """One COMPLETE trial for a plot: its values and what kind of point it is."""

    number: int
    values: list[float]
    kind: str  # "feasible", "infeasible" (measured, SLO broken) or "failed"
    on_front: bool
    is_baseline: bool
    label: str  # failure class or ""
    steps: list[dict[str, Any]]


def points(study: optuna.Study) -> list[Point]:
    """Every COMPLETE trial as a :class:`Point`."""
    names = metric_names(study)
    on_front = {t.number for t in study.best_trials}
    out: list[Point] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        kind = "failed" if is_failed(t) else ("feasible" if is_feasible(t) else "infeasible")
        rec = read(t)
        steps = [_step_point(s, names) for s in (rec.result.steps if rec.result else ())]
        out.append(
            Point(
                number=t.number,
                values=list(t.values or []),
                kind=kind,
                on_front=t.number in on_front,
                is_baseline=rec.is_baseline,
                label=(rec.failure or rec.status or "") if kind == "failed" else "",
                steps=steps,
            )
        )
    return out


def best_so_far(study: optuna.Study, names: Sequence[str] | None = None) -> str:
    """``output_throughput 812 tok/s (#7)`` for the best feasible trial by the first objective, or ""."""
    names = list(names or metric_names(study))
    best = front(study)
    if not best:
        return ""
    t = best[0]
    return f"{names[0]} {fmt_num(t.values[0])} {unit(names[0])} (#{t.number})".replace("  ", " ")


def pick(study: optuna.Study, how: str) -> FrozenTrial:
    """One trial of the front: ``throughput`` (best maximised objective), ``latency`` (best minimised
    objective) or ``knee`` (nearest to the utopia point once each objective is scaled to [0, 1] over the
    front, 1 = best; ties to the lower trial number). Raises :class:`TunerError` when no trial is feasible."""
    if how not in PICKS:
        raise UsageError(f"--pick must be one of {', '.join(PICKS)}, got {how!r}")
    best = front(study)
    if not best:
        raise TunerError(f"study {study.study_name!r} has no feasible trial yet")
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    if how in ("throughput", "latency"):
        want_max = how == "throughput"
        if want_max not in maximize:
            kind = "maximised (throughput)" if want_max else "minimised (latency)"
            raise UsageError(f"--pick {how}: the study has no {kind} objective")
        i = maximize.index(want_max)
        sign = -1.0 if want_max else 1.0
        return min(best, key=lambda t: (sign * t.values[i], t.number))
    scaled: list[tuple[float, int, FrozenTrial]] = []
    for t in best:
        dist = 0.0
        for i, mx in enumerate(maximize):
            col = [u.values[i] for u in best]
            lo, hi = min(col), max(col)
            goodness = (
                1.0
                if hi == lo
                else ((t.values[i] - lo) / (hi - lo) if mx else (hi - t.values[i]) / (hi - lo))
            )
            dist += (1.0 - goodness) ** 2
        scaled.append((dist, t.number, t))
    return min(scaled, key=lambda x: (x[0], x[1]))[2]
