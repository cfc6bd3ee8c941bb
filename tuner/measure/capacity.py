"""Capacity mode, the pure part: which load levels to measure, when to stop, which step scores, and how
precisely the SLO boundary is known.

At a fixed rate below capacity every feasible config delivers the offered throughput, and at an unbounded
rate TTFT is all queueing; neither ranks configs the way users feel them. So one server start is stepped
through load levels (concurrency, or Poisson rate when the workload gives a rate) and the config is scored
by its **SLO capacity**: the highest output throughput among the measured steps whose latency percentiles
meet every SLO limit (a level measured twice must pass both times). Every step is kept as a point of the
config's latency-throughput curve.

1. **Ladder**: ``start``, ``start x factor``, ... (or ``levels``), until :func:`should_stop`: a step's latency
   reaches ``stop_factor`` x a limit, the step was cut short because its verdict was settled
   (:mod:`tuner.measure.watch`), it failed too many requests, or throughput stopped growing.
2. **Refinement** (with an SLO and ``resolution``): the ladder has bracketed the boundary between the highest
   passing level and the lowest failing level above it; bisect that bracket on the load axis (integer
   concurrencies, or rates) until its relative width ``(failing - passing) / passing`` is within
   ``resolution``, two concurrencies are adjacent, ``max_steps`` steps are spent, or the bracket cannot
   beat the study's best so far (its throughput ceiling ``thr(passing) x failing / passing`` is below it:
   per-request speed does not grow with load).
3. **Uncertain passes are re-measured once**: a step that meets the SLO while a percentile's interval
   (:mod:`tuner.measure.quantile`) still holds the limit is measured again at the same level, and the level
   passes only if both do. Counting it as failing outright would judge a p99 by the slowest one or two
   requests at the step sizes a trial can afford; re-measuring spends steps only where the verdict is close.

:func:`next_level` is the whole rule as a pure function of the steps so far; :func:`run_ladder` drives it
synchronously (the simulator, the benchmarks) and :mod:`tuner.measure.trial` drives it over a real server.
Limits are judged by :mod:`tuner.measure.slo`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.config.workload import CapacitySpec
from tuner.measure.metrics import Summary
from tuner.measure.quantile import min_samples, quantile_of
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


def step_requests(
    level: float,
    requests: int | None,
    cap: CapacitySpec,
    is_rate: bool,
    slo: Mapping[str, float] | None = None,
) -> int:
    """Measured requests at one level: ``requests_per_step`` if given, else enough for a steady state
    (4 x the concurrency, or 4 s worth at a rate), never fewer than 8 nor than a quarter of the file's
    ``requests``, and never fewer than the highest SLO percentile needs for an interval
    (:func:`tuner.measure.quantile.min_samples`: 299 requests for a p99, 29 for a p90). At a concurrency
    the count is rounded up to whole waves (a multiple of it): a last partial wave runs the server below
    the level and lowers the step's throughput, by up to a third at three waves."""
    if cap.requests_per_step is not None:
        base = cap.requests_per_step
    else:
        base = max(8, round(4 * level))
        if requests is not None:
            base = max(base, requests // 4)
        quantiles = [q for name in (slo or {}) if (q := quantile_of(name)) is not None]
        base = max(base, *(min_samples(q) for q in quantiles)) if quantiles else base
    if is_rate or level < 1:
        return base
    wave = int(level)
    return -(-base // wave) * wave


def violations(summary: Summary, slo: Mapping[str, float]) -> dict[str, float]:
    """``{metric: observed / limit}`` for each SLO limit (a missing figure counts as broken: ``inf``)."""
    return {name: ratio(summary.metric(name), limit) for name, limit in slo.items()}


def meets(summary: Summary, slo: Mapping[str, float], max_failed_fraction: float) -> bool:
    """Whether one step is within every SLO limit and did not fail too many requests (a step cut short
    because its verdict was settled never is)."""
    if summary.pruned is not None or summary.completed == 0 or summary.failed_fraction > max_failed_fraction:
        return False
    return all(within(summary.metric(name), limit) for name, limit in slo.items())


def should_stop(
    steps: Sequence[Summary], slo: Mapping[str, float], stop_factor: float, max_failed_fraction: float
) -> str | None:
    """Why stepping should stop after the last step, or None to go on."""
    last = steps[-1]
    if last.pruned is not None:
        return f"cut short: {last.pruned}"
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


def scored_step(
    steps: Sequence[Summary],
    slo: Mapping[str, float],
    max_failed_fraction: float,
    levels_of: Sequence[float] | None = None,
) -> int:
    """Index of the step that scores the config: the highest output throughput among steps that meet the
    SLO (with ``levels_of``, the level of each step: only at levels where every step meets it); when none
    does, the step nearest to meeting it (smallest worst violation), so constraint values tell the sampler
    how far off the config is."""
    failing = set() if levels_of is None else _failing_levels(levels_of, steps, slo, max_failed_fraction)
    ok = [
        i
        for i, s in enumerate(steps)
        if meets(s, slo, max_failed_fraction) and (levels_of is None or levels_of[i] not in failing)
    ]
    if ok:
        return max(ok, key=lambda i: steps[i].output_throughput_tok_s)
    done = [i for i, s in enumerate(steps) if s.completed > 0]
    if not done:
        return 0
    return min(done, key=lambda i: max(violations(steps[i], slo).values(), default=0.0))


def _failing_levels(
    levels_of: Sequence[float], steps: Sequence[Summary], slo: Mapping[str, float], max_failed_fraction: float
) -> set[float]:
    return {lv for lv, s in zip(levels_of, steps, strict=True) if not meets(s, slo, max_failed_fraction)}


# ------------------------------------------------------------------------------------------- the bracket


@dataclass(frozen=True)
class Bracket:
    """Where the SLO boundary lies on the load axis: the highest level that passes and the lowest failing
    level above it (``None`` where there is none), the asked ``resolution`` and why refinement ended."""

    passing: float | None
    failing: float | None
    resolution: float | None
    reason: str
    integer: bool = False  # concurrency: adjacent integers are as fine as it gets

    @property
    def width(self) -> float | None:
        """``(failing - passing) / passing``; None while either end is missing."""
        if self.passing is None or self.failing is None or self.passing <= 0:
            return None
        return (self.failing - self.passing) / self.passing

    @property
    def within(self) -> bool:
        """Whether the boundary is known to the asked resolution (or to adjacent concurrencies)."""
        w = self.width
        if w is None or self.passing is None or self.failing is None:
            return False
        adjacent = self.integer and self.failing - self.passing <= 1
        return adjacent or (self.resolution is not None and w <= self.resolution * (1 + 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return {
            "passing": self.passing,
            "failing": self.failing,
            "width": self.width,
            "resolution": self.resolution,
            "within": self.within,
            "reason": self.reason,
        }


def bracket_of(
    done: Sequence[tuple[float, Summary]],
    slo: Mapping[str, float],
    max_failed_fraction: float,
    resolution: float | None,
    is_rate: bool,
    reason: str,
) -> Bracket:
    """The bracket of the boundary among the measured ``(level, summary)`` steps."""
    levels_of = [lv for lv, _ in done]
    failing_levels = _failing_levels(levels_of, [s for _, s in done], slo, max_failed_fraction)
    failing = min(failing_levels, default=None)
    passing = max(
        (lv for lv in levels_of if lv not in failing_levels and (failing is None or lv < failing)),
        default=None,
    )
    return Bracket(passing, failing, resolution, reason, integer=not is_rate)


def next_level(
    cap: CapacitySpec,
    is_rate: bool,
    slo: Mapping[str, float],
    max_failed_fraction: float,
    done: Sequence[tuple[float, Summary]],
    best_so_far: float | None = None,
) -> float | str:
    """The next load level to measure after the ``(level, summary)`` steps in ``done``, or why to stop (see
    the module docstring). ``best_so_far``: the study's best SLO capacity (output tok/s), if any."""
    if not done:
        return levels(cap)[0]
    if len(done) >= cap.max_steps:
        return f"step budget spent ({cap.max_steps} steps)"
    last_level, last = done[-1]
    if _remeasure(last, last_level, done, slo, max_failed_fraction):
        return last_level
    ladder = levels(cap)
    measured = [lv for lv, _ in done]
    why = should_stop([s for _, s in done], slo, cap.stop_factor, max_failed_fraction)
    if why is None and set(measured) <= set(ladder):
        above = [lv for lv in ladder if lv > max(measured)]
        if above:
            return above[0]
        why = "the ladder ran out"
    if not slo or cap.resolution is None:
        return why or "the ladder ran out"
    return _bisect(cap, is_rate, slo, max_failed_fraction, done, best_so_far)


def _remeasure(
    last: Summary,
    level: float,
    done: Sequence[tuple[float, Summary]],
    slo: Mapping[str, float],
    max_failed_fraction: float,
) -> bool:
    """An uncertain pass (with an interval to speak of) measured once so far is measured again."""
    once = sum(1 for lv, _ in done if lv == level) == 1
    return once and last.uncertain and last.bounded and meets(last, slo, max_failed_fraction)


def _bisect(
    cap: CapacitySpec,
    is_rate: bool,
    slo: Mapping[str, float],
    max_failed_fraction: float,
    done: Sequence[tuple[float, Summary]],
    best_so_far: float | None,
) -> float | str:
    b = bracket_of(done, slo, max_failed_fraction, cap.resolution, is_rate, "")
    if b.passing is None:
        return "the lowest level breaks the SLO"
    if b.failing is None:
        return "the highest level measured meets the SLO"
    if b.within:
        return "bracket within resolution"
    ceiling = _ceiling(done, b.passing, b.failing, slo, max_failed_fraction)
    if best_so_far is not None and ceiling < best_so_far:
        return f"cannot beat the best so far ({ceiling:.0f} < {best_so_far:.0f} tok/s)"
    if is_rate:
        return float(f"{(b.passing + b.failing) / 2:.4g}")
    return float((int(b.passing) + int(b.failing)) // 2)


def _ceiling(
    done: Sequence[tuple[float, Summary]],
    passing: float,
    failing: float,
    slo: Mapping[str, float],
    max_failed_fraction: float,
) -> float:
    """The most output throughput a level below ``failing`` could give: the passing level's throughput
    scaled by ``failing / passing`` (per-request speed does not grow with load)."""
    thr = max(
        s.output_throughput_tok_s for lv, s in done if lv == passing and meets(s, slo, max_failed_fraction)
    )
    return thr * failing / passing


# -------------------------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Ladder:
    """One capacity run: the level of each step, the steps' summaries, the scored step's index, why
    stepping stopped, whether the scored step meets the SLO (else it is the nearest miss) and the bracket
    of the boundary (None without an SLO)."""

    levels: list[float]
    steps: list[Summary]
    scored: int
    stop: str | None
    feasible: bool
    bracket: Bracket | None = None


def conclude(
    cap: CapacitySpec,
    is_rate: bool,
    slo: Mapping[str, float],
    max_failed_fraction: float,
    done: Sequence[tuple[float, Summary]],
    why: str | None,
) -> Ladder:
    """The :class:`Ladder` of a finished run: its scored step and bracket."""
    levels_of = [lv for lv, _ in done]
    steps = [s for _, s in done]
    idx = scored_step(steps, slo, max_failed_fraction, levels_of)
    failing = _failing_levels(levels_of, steps, slo, max_failed_fraction)
    feasible = meets(steps[idx], slo, max_failed_fraction) and levels_of[idx] not in failing
    bracket = bracket_of(done, slo, max_failed_fraction, cap.resolution, is_rate, why or "") if slo else None
    return Ladder(levels_of, steps, idx, why, feasible, bracket)


def run_ladder(
    cap: CapacitySpec,
    requests: int | None,
    is_rate: bool,
    slo: Mapping[str, float],
    max_failed_fraction: float,
    measure: Callable[[int, float, int], Summary],
    best_so_far: float | None = None,
) -> Ladder:
    """Measure the levels :func:`next_level` asks for, calling ``measure(index, level, requests)``
    (requests from :func:`step_requests`), until it says stop; conclude with :func:`conclude`."""
    done: list[tuple[float, Summary]] = []
    while True:
        nxt = next_level(cap, is_rate, slo, max_failed_fraction, done, best_so_far)
        if isinstance(nxt, str):
            return conclude(cap, is_rate, slo, max_failed_fraction, done, nxt)
        n = step_requests(nxt, requests, cap, is_rate, slo)
        done.append((nxt, measure(len(done), nxt, n)))
