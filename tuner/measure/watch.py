"""In-trial pruning: cut a load step short once its SLO verdict is settled. Pure (the caller gives the time).

A capacity step exists to say whether a load level meets the SLO. Once enough of its planned samples are
known to exceed a percentile limit, the step's estimate of that percentile exceeds it whatever the rest
turn out to be (:func:`tuner.measure.quantile.settled_broken`), so measuring on is wasted time. A sample is
*known* to exceed as soon as it is over the limit, finished or not:

* ``ttft_pNN`` / ``e2e_pNN``: a finished request over the limit, or one still waiting for its first token
  (its end) longer than the limit;
* ``itl_pNN``: a finished gap between two streamed chunks over the limit, or the gap a request in flight
  is in now, once it is longer than the limit.

The planned sample count is the step's request count; for ITL an upper bound of the gaps: each issued
request's own ``expected_output_tokens - 1``, plus ``max_output_tokens - 1`` for each request not issued
yet (an upper bound only makes the rule slower to fire, and it tightens as requests are issued). TPOT
limits and percentile-less limits are never pruned on. :class:`StepWatch` keeps per-request progress so a check costs time proportional to what
arrived since the last one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tuner.load.records import RequestRecord
from tuner.measure.quantile import quantile_of, settled_broken

#: seconds between two checks of a running step
CHECK_INTERVAL_S = 0.1


@dataclass(frozen=True)
class _Limit:
    name: str
    kind: str  # ttft | e2e | itl
    q: float
    limit_s: float
    planned: int


@dataclass
class StepWatch:
    """Watches one measured step (see the module docstring); :meth:`settled` says why it may stop."""

    slo: Mapping[str, float]  # limits in ms, by metric name
    planned_requests: int
    max_output_tokens: int  # the most output tokens a request of the step can ask for
    reason: str | None = None
    _limits: list[_Limit] = field(default_factory=list)
    _gaps_seen: dict[int, int] = field(default_factory=dict)  # record index -> token times checked
    _long_gaps: int = 0

    def __post_init__(self) -> None:
        for name, limit in self.slo.items():
            kind, q = name.split("_")[0], quantile_of(name)
            if q is None or kind not in ("ttft", "e2e", "itl"):
                continue
            self._limits.append(_Limit(name, kind, q, limit / 1e3, self.planned_requests))

    @property
    def active(self) -> bool:
        """Whether any limit can settle the step early."""
        return bool(self._limits) and self.planned_requests > 0

    def settled(self, records: Sequence[RequestRecord], now: float) -> str | None:
        """Why the step's verdict is settled (some percentile is over its limit whatever comes), or None.
        ``records`` are the step's records so far (warm-up ones are skipped), ``now`` on their clock."""
        if self.reason is not None:
            return self.reason
        measured = [(i, r) for i, r in enumerate(records) if not r.warmup and r.error is None]
        for lim in self._limits:
            planned = lim.planned
            if lim.kind == "itl":
                over = self._count_long_gaps(measured, lim.limit_s, now)
                planned = self._planned_gaps(records)
            else:
                over = sum(_over(r, lim.kind, lim.limit_s, now) for _, r in measured)
            if settled_broken(over, planned, lim.q):
                self.reason = (
                    f"{lim.name} settled over {lim.limit_s * 1e3:g} ms: {over} of {planned} "
                    f"samples already exceed it"
                )
                return self.reason
        return None

    def _planned_gaps(self, records: Sequence[RequestRecord]) -> int:
        """An upper bound of the step's ITL samples: issued requests' own expected gaps, the rest at most."""
        issued = [r for r in records if not r.warmup]
        unknown = sum(1 for r in issued if r.expected_output_tokens is None)
        known = sum(
            max(r.expected_output_tokens - 1, 1) for r in issued if r.expected_output_tokens is not None
        )
        rest = max(self.planned_requests - len(issued), 0) + unknown
        return known + rest * max(self.max_output_tokens - 1, 1)

    def _count_long_gaps(
        self, measured: Sequence[tuple[int, RequestRecord]], limit_s: float, now: float
    ) -> int:
        """Finished gaps over the limit (counted once, incrementally) plus the open gaps over it now."""
        open_long = 0
        for i, r in measured:
            times = r.token_times
            seen = self._gaps_seen.get(i, 0)
            for k in range(max(seen, 1), len(times)):
                if times[k] - times[k - 1] > limit_s:
                    self._long_gaps += 1
            self._gaps_seen[i] = len(times)
            if r.end_time is None and times and now - times[-1] > limit_s:
                open_long += 1
        return self._long_gaps + open_long


def settled_metric(reason: str) -> str:
    """The SLO metric (e.g. ``ttft_p99``) a :attr:`StepWatch.reason` names: the limit the step broke."""
    return reason.split(" ", 1)[0]


def _over(r: RequestRecord, kind: str, limit_s: float, now: float) -> bool:
    """Whether a request's TTFT (or E2E) is known to exceed ``limit_s`` at ``now``."""
    mark = r.first_token_time if kind == "ttft" else r.end_time
    return (mark if mark is not None else now) - r.send_time > limit_s


__all__ = ["CHECK_INTERVAL_S", "StepWatch"]
