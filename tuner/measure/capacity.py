"""Capacity mode, the pure part: which load levels to try, when to stop stepping, which step scores.

Measured on an H200: at a fixed rate below capacity every feasible config delivers the offered throughput,
and at an unbounded rate TTFT is all queueing; neither ranks configs the way users feel them. So one server
start is stepped through rising load levels (concurrency, or Poisson rate when the workload gives a rate) and
the config is scored by its **goodput capacity**: the highest output throughput among the steps whose
latency percentiles still meet every SLO limit. Every step is kept as a point of the latency-throughput curve.

Stepping stops after a step whose latency exceeds ``stop_factor`` x its limit (the SLO is clearly broken:
higher load only queues more), after one that failed too many requests, or when throughput has stopped
growing (< ``min_gain`` over the best so far for two steps in a row) with no SLO to guide it.

This is the one capacity rule: tuner's trial runner, the simulator (:func:`tuner.sim.engine.capacity`) and
the benchmarks all step through :func:`levels` with :func:`step_requests`, stop by :func:`should_stop` and
score :func:`scored_step`; :func:`run_ladder` is that loop for a synchronous ``measure``. Limits are judged by
:mod:`tuner.measure.slo`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tuner.config.spec import CapacitySpec
from tuner.measure.metrics import Summary
from tuner.measure.slo import ratio, within

MIN_GAIN = 0.05


def levels(cap: CapacitySpec) -> list[float]:
    """The load levels in order: ``cap.levels`` as given, else start, start x factor, ... <= max_level."""
    if cap.levels:
        return sorted(set(cap.levels))
    out: list[float] = []
    x = cap.start
    while x <= cap.max_level * (1 + 1e-9):
        out.append(round(x, 6))
        x *= cap.factor
    return out or [cap.start]


def step_requests(level: float, requests: int | None, cap: CapacitySpec, is_rate: bool) -> int:
    """Measured requests at one level: ``requests_per_step`` if given, else enough for a steady state
    (4 x the concurrency, or 4 s worth at a rate), never fewer than 8 nor than a quarter of the file's
    ``requests``."""
    if cap.requests_per_step is not None:
        return cap.requests_per_step
    base = max(8, round(4 * level))
    if requests is not None:
        base = max(base, requests // 4)
    return base


def violations(summary: Summary, slo: Mapping[str, float]) -> dict[str, float]:
    """``{metric: observed / limit}`` for each SLO limit (a missing figure counts as broken: ``inf``)."""
    return {name: ratio(summary.metric(name), limit) for name, limit in slo.items()}


def meets(summary: Summary, slo: Mapping[str, float], max_failed_fraction: float) -> bool:
    """Whether one step is within every SLO limit and did not fail too many requests."""
    if summary.completed == 0 or summary.failed_fraction > max_failed_fraction:
        return False
    return all(within(summary.metric(name), limit) for name, limit in slo.items())


def should_stop(
    steps: Sequence[Summary], slo: Mapping[str, float], stop_factor: float, max_failed_fraction: float
) -> str | None:
    """Why stepping should stop after the last step, or None to go on."""
    last = steps[-1]
    if last.completed == 0 or last.failed_fraction > max_failed_fraction:
        return "requests failed"
    worst = max(violations(last, slo).values(), default=0.0)
    if worst >= stop_factor:
        return f"SLO broken ({worst:.1f}x a limit)"
    if len(steps) >= 3:
        best_before = max(s.output_throughput_tok_s for s in steps[:-2])
        recent = max(s.output_throughput_tok_s for s in steps[-2:])
        if best_before > 0 and recent < best_before * (1 + MIN_GAIN) and worst > 1.0:
            return "throughput saturated and SLO broken"
        if best_before > 0 and recent < best_before * (1 + MIN_GAIN) and not slo:
            return "throughput saturated"
    return None


def scored_step(steps: Sequence[Summary], slo: Mapping[str, float], max_failed_fraction: float) -> int:
    """Index of the step that scores the config: the highest output throughput among steps that meet the
    SLO; when none does, the step nearest to meeting it (smallest worst violation), so constraint values
    tell the sampler how far off the config is."""
    ok = [i for i, s in enumerate(steps) if meets(s, slo, max_failed_fraction)]
    if ok:
        return max(ok, key=lambda i: steps[i].output_throughput_tok_s)
    done = [i for i, s in enumerate(steps) if s.completed > 0]
    if not done:
        return 0
    return min(done, key=lambda i: max(violations(steps[i], slo).values(), default=0.0))


@dataclass(frozen=True)
class Ladder:
    """One capacity run: the levels stepped through, their summaries, the scored step's index, why stepping
    stopped (``None``: the ladder ran out) and whether the scored step meets the SLO (else it is the nearest
    miss)."""

    levels: list[float]
    steps: list[Summary]
    scored: int
    stop: str | None
    feasible: bool


def run_ladder(
    cap: CapacitySpec,
    requests: int | None,
    is_rate: bool,
    slo: Mapping[str, float],
    max_failed_fraction: float,
    measure: Callable[[int, float, int], Summary],
) -> Ladder:
    """Step through :func:`levels` calling ``measure(index, level, requests)`` (requests from
    :func:`step_requests`) until :func:`should_stop` says so; score by :func:`scored_step`."""
    done: list[float] = []
    steps: list[Summary] = []
    why: str | None = None
    for i, level in enumerate(levels(cap)):
        steps.append(measure(i, level, step_requests(level, requests, cap, is_rate)))
        done.append(level)
        why = should_stop(steps, slo, cap.stop_factor, max_failed_fraction)
        if why is not None:
            break
    idx = scored_step(steps, slo, max_failed_fraction)
    return Ladder(done, steps, idx, why, meets(steps[idx], slo, max_failed_fraction))
