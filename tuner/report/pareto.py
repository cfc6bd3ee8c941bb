"""Read a finished (or running) study back: the Pareto front, every measured step, the picks. No writes.

The trial-level front is Optuna's own: ``study.best_trials`` — COMPLETE trials that satisfy every constraint
(so no failed trial and no SLO breaker) and that no other such trial dominates. Nothing here decides
dominance.

A row (:func:`pareto_rows`, the JSON of ``tuner pareto --format json``)::

    {"trial": 7, "params": {...}, "values": {"output_throughput": 812.0, "ttft_p99": 640.0},
     "metrics": {... Summary.to_dict() ...}, "vs_baseline": {"output_throughput": 23.5, ...},
     "is_baseline": false, "flags": {...}, "steps": [...],        # steps: capacity mode only
     "spread": {"trial": 7, "n": 3, "mean": 805.0, "low": 790.0, "high": 812.0},  # with its repeats
     "load": {"concurrency": 40, "requests": 299},                # the scored step's load ({}: not stored)
     "slo": {"ttft_p99": {"value": 640.0, "limit": 1000.0, "within": true}}, "meets_slo": true,
     "on_front": true}

``params`` are the values the trial ran with (for the baseline: the flags it pins, usually none);
``vs_baseline`` is the percent change of each objective against the baseline trial (None without a measured
baseline); ``slo``: each SLO limit of the stored spec with the scored figure and its verdict. The report
(:func:`report_rows`) is the front and, when it is not on it, the measured baseline after it
(``on_front`` false).

The step-level front (:func:`step_rows`) is :mod:`tuner.report.envelope`'s, over every measured step of every
finished trial (:func:`step_view`). A failed trial is PRUNED without values (COMPLETE with penalty values in
studies stored before that rule): counted and listed as failed, never scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError, UsageError
from tuner.measure.metrics import Summary
from tuner.measure.slo import within
from tuner.report.envelope import StepView, build, load_text, slo_limits, step_row
from tuner.report.fmt import fmt_num
from tuner.report.names import CAPACITY, label, score_label, unit
from tuner.report.noise import spreads
from tuner.search.confirm import front_of_originals
from tuner.search.record import FINISHED_STATES, StoredResult, read, read_study

Pick = Literal["throughput", "latency", "knee"]
PICKS: tuple[str, ...] = ("throughput", "latency", "knee")


def metric_names(study: optuna.Study) -> list[str]:
    """The objective metric names stored with the study (``value_0``... when it was not made by tuner)."""
    names = read_study(study).metric_names
    if names is not None and len(names) == len(study.directions):
        return list(names)
    return [f"value_{i}" for i in range(len(study.directions))]


def format_values(names: Sequence[str], values: Sequence[float] | None, *, capacity: bool = False) -> str:
    """``output throughput 812 tok/s, TTFT p99 640 ms`` (``capacity``: the throughput called
    :data:`tuner.report.names.CAPACITY`)."""
    if not values:
        return "-"
    return ", ".join(
        f"{score_label(n, capacity)} {fmt_num(v)} {unit(n)}".rstrip()
        for n, v in zip(names, values, strict=False)
    )


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The measured baseline (COMPLETE, status ok), the latest if there are several; else None."""
    found = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (r := read(t)).is_baseline and not r.failed and r.repeat_of is None
    ]
    return found[-1] if found else None


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Optuna's Pareto front (``study.best_trials``), best first by the first objective."""
    trials = front_of_originals(study)  # repeats of ``tuner confirm`` are never rows of the front
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


def row(
    trial: FrozenTrial,
    names: Sequence[str],
    base: FrozenTrial | None,
    slo: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One trial as a report row (see the module docstring); ``slo``: metric -> limit."""
    rec = read(trial)
    result = rec.result or StoredResult()
    values = list(rec.scored_values or [])
    checks = slo_checks(result.metrics or {}, slo or {})
    out: dict[str, Any] = {
        "trial": trial.number,
        "params": dict(rec.run_params),
        "values": dict(zip(names, values, strict=False)),
        "metrics": dict(result.metrics or {}),
        "vs_baseline": dict(
            zip(
                names, change_vs(values, read(base).scored_values if base is not None else None), strict=False
            )
        ),
        "is_baseline": rec.is_baseline,
        "flags": dict(result.flags),
        "load": dict((result.metrics or {}).get("load") or {}),
        "slo": checks,
        "meets_slo": rec.feasible if rec.feasible is not None else all(c["within"] for c in checks.values()),
        "on_front": True,
    }
    if result.steps:
        out["steps"] = [_step_point(s, names, slo or {}) for s in result.steps]
    return out


def slo_checks(metrics: Mapping[str, Any], slo: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Each SLO limit against a stored summary: ``{"ttft_p99": {"value", "limit", "within"}}`` (value None
    and within False where the summary has no figure)."""
    summary = Summary.from_dict(metrics)
    out: dict[str, dict[str, Any]] = {}
    for metric, limit in slo.items():
        try:
            v = summary.metric(metric)
        except KeyError:
            v = math.nan
        out[metric] = {"value": v if math.isfinite(v) else None, "limit": limit, "within": within(v, limit)}
    return out


def _step_point(step: Mapping[str, Any], names: Sequence[str], slo: Mapping[str, float]) -> dict[str, Any]:
    """One stored step: its load, each objective's figure and each SLO limit's check (:func:`slo_checks`)."""
    summary = Summary.from_dict(step)
    point: dict[str, Any] = {"load": step.get("load") or {}}
    for n in names:
        try:
            v = summary.metric(n)
        except KeyError:
            continue
        point[n] = v if math.isfinite(v) else None
    if slo:
        point["slo"] = slo_checks(step, slo)
    return point


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The feasible non-dominated trials as rows, best first by the first objective; each with ``spread``:
    the first objective over the trial and its repeats (:func:`tuner.report.noise.spreads`), or None."""
    names = metric_names(study)
    base = baseline_trial(study)
    slo = study_slo(study)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    found = spreads((read(t) for t in study.get_trials(deepcopy=False, states=FINISHED_STATES)), maximize)
    rows = [row(t, names, base, slo) for t in front(study)]
    for r in rows:
        spread = found.get(r["trial"])
        r["spread"] = spread.to_dict() if spread is not None else None
    return rows


def report_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """:func:`pareto_rows` and, when it is not on the front, the measured baseline last (``on_front``
    false), so that every report compares against it."""
    rows = pareto_rows(study)
    base = baseline_trial(study)
    if base is not None and all(r["trial"] != base.number for r in rows):
        extra = row(base, metric_names(study), base, study_slo(study))
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        trials = study.get_trials(deepcopy=False, states=FINISHED_STATES)
        spread = spreads((read(t) for t in trials), maximize).get(base.number)
        extra.update(on_front=False, spread=spread.to_dict() if spread is not None else None)
        rows.append(extra)
    return rows


def study_slo(study: optuna.Study) -> dict[str, float]:
    """The SLO limits of the study's stored spec (metric -> limit in ms; {} without one)."""
    return slo_limits(read_study(study).spec)


def capacity_mode(study: optuna.Study) -> bool:
    """Whether the stored spec measures in capacity mode (the default mode; False when it says ``fixed``)."""
    workload = (read_study(study).spec or {}).get("workload")
    return not (isinstance(workload, dict) and workload.get("mode") == "fixed")


def step_view(study: optuna.Study) -> StepView:
    """Every measured step of the study's finished trials, and the failed ones, which have none
    (:mod:`tuner.report.envelope`)."""
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    records = [
        r
        for t in study.get_trials(deepcopy=False, states=FINISHED_STATES)
        if (r := read(t)).repeat_of is None  # a repeat is its original's curve again, not a curve of its own
    ]
    return build(records, metric_names(study), maximize, read_study(study).spec)


def step_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The step-level front on the study's primary latency as rows, lowest throughput first."""
    return [step_row(s) for s in step_view(study).front()]


def best_so_far(study: optuna.Study, names: Sequence[str] | None = None) -> str:
    """``#7: SLO capacity 812 tok/s, TTFT p99 640 ms`` (every objective) for the best feasible trial by the
    first objective, or ""."""
    names = list(names or metric_names(study))
    best = front(study)
    if not best:
        return ""
    t = best[0]
    return f"#{t.number}: {format_values(names, t.values, capacity=capacity_mode(study))}"


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


def describe_slo(slo: Mapping[str, float]) -> str:
    """``TTFT p99 <= 1000 ms, ITL p99 <= 50 ms`` ("" without limits)."""
    return ", ".join(f"{label(m)} <= {limit:g} {unit(m)}".rstrip() for m, limit in slo.items())


def front_header(study: optuna.Study, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The lines above the front's table: what it is, how configurations are scored and under which SLO,
    and what was sent (:mod:`tuner.report.traffic`); one line when no trial is feasible yet."""
    from tuner.report.traffic import describe_traffic, study_traffic

    on_front = [r for r in rows if r.get("on_front", True)]
    if not on_front:
        done = len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
        return [f"{study.study_name}: no feasible trial yet ({done} finished)"]
    n = len(on_front)
    head = f"{study.study_name}: Pareto front, {n} configuration{'s' if n != 1 else ''}"
    base = [r["trial"] for r in rows if not r.get("on_front", True)]
    lines = [head + (f" (baseline #{base[0]} below, not on the front)" if base else "")]
    names = metric_names(study)
    slo = study_slo(study)
    if capacity_mode(study) and names[0] == "output_throughput":
        lines.append(
            f"scored by {CAPACITY} (tok/s): the output throughput of the highest measured load that met "
            f"every SLO limit" + (f" ({describe_slo(slo)})" if slo else "")
        )
    elif slo:
        lines.append(f"SLO: {describe_slo(slo)}")
    sent = describe_traffic(study_traffic(study.get_trials(deepcopy=False, states=FINISHED_STATES)))
    if sent:
        lines.append(sent)
    return lines


def versus_defaults(study: optuna.Study, trial: FrozenTrial) -> str:
    """One line for the end of a study: ``best: trial 5, +72.4 % SLO capacity under TTFT p99 <= 1000 ms
    vs vLLM's defaults (trial 0: 3513 tok/s at load 32)``; or that the defaults were the best, or that they
    broke the SLO at every load, or that the study measured no baseline."""
    names = metric_names(study)
    slo = study_slo(study)
    what = score_label(names[0], capacity_mode(study))
    under = f" under {describe_slo(slo)}" if slo else ""
    base = baseline_trial(study)
    if base is None:
        return f"best: trial {trial.number} (the study measured no baseline to compare with)"
    brec = read(base)
    if trial.number == base.number or read(trial).is_baseline:
        return f"best: vLLM's defaults (trial {base.number}); no searched configuration beat them{under}"
    if brec.feasible is False or not brec.scored_values:
        return (
            f"best: trial {trial.number}, {format_values(names[:1], read(trial).scored_values)}{under}; "
            f"vLLM's defaults (trial {base.number}) broke the SLO at every load they were measured at"
        )
    change = change_vs(list(read(trial).scored_values or []), brec.scored_values)[0]
    if change is None:
        return f"best: trial {trial.number}"
    load = (brec.result.metrics or {}).get("load") if brec.result else None
    at = f" at load {load_text(load, short=True)}" if load else ""
    base_value = f"{fmt_num(brec.scored_values[0])} {unit(names[0])}".rstrip()
    return (
        f"best: trial {trial.number}, {change:+.1f} % {what}{under} vs vLLM's defaults "
        f"(trial {base.number}: {base_value}{at})"
    )
