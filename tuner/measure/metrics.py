"""Request records -> a :class:`Summary`. Pure code (numpy), no I/O, no clock.

Definitions (the same as ``vllm bench serve`` uses, so figures compare):

* **duration** — first measured request sent to last measured request finished (warm-up excluded).
* **output throughput** — output tokens of completed requests / duration. **total** adds prompt tokens.
* **TTFT** — first output chunk minus send time, per completed request.
* **ITL** — the gap between consecutive output chunks, pooled over every completed request.
* **TPOT** — per request, (end - first token) / (output tokens - 1), for requests with > 1 output token.
* **E2E** — end minus send, per completed request.
* **goodput** — completed requests whose own TTFT, TPOT and E2E meet the SLO, per second (a per-request
  view; the study's constraints use the percentiles).
* **input tokens** — percentiles of what was sent, as the server counted it (``usage.prompt_tokens``), per
  completed request.
* **per turn** — when the traffic has sessions (a record with ``turn > 0``): TTFT and ITL of completed
  requests by turn index (``"1"``, ``"2"``, ...) and of every later turn together (``"later"``), with
  their counts: what a user feels on a conversation's first message against its follow-ups.

Latencies are reported in milliseconds; percentiles are numpy's linear interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tuner.load.records import CANCELLED, RequestRecord
from tuner.measure.quantile import judge, quantile_of
from tuner.measure.slo import RequestLatency, request_latency, within

#: the percentiles of every :class:`Distribution`
PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Distribution:
    """Mean and percentiles of a latency, in milliseconds. ``nan`` when there was no sample, and ``p95`` in
    summaries stored before it was kept (it comes last so that positional construction stays as it was)."""

    mean: float = math.nan
    p50: float = math.nan
    p90: float = math.nan
    p99: float = math.nan
    count: int = 0
    p95: float = math.nan

    @classmethod
    def of(cls, values_ms: Sequence[float] | np.ndarray) -> Distribution:
        a = np.asarray(values_ms, dtype=float)
        if a.size == 0:
            return cls()
        p50, p90, p95, p99 = np.percentile(a, PERCENTILES)
        return cls(float(a.mean()), float(p50), float(p90), float(p99), int(a.size), float(p95))

    def to_dict(self) -> dict[str, float | None]:
        """``mean`` and ``p50``... ``p99`` (:data:`PERCENTILES`); None where not finite."""
        return {k: _finite(getattr(self, k)) for k in ("mean", *(f"p{q}" for q in PERCENTILES))}


@dataclass(frozen=True)
class Summary:
    """What one load run measured. ``to_dict`` gives the JSON of ``tuner measure --json``."""

    duration_s: float
    completed: int
    failed: int
    generated_tokens_total: int
    prompt_tokens_total: int
    output_throughput_tok_s: float
    total_throughput_tok_s: float
    request_throughput_rps: float
    ttft_ms: Distribution
    itl_ms: Distribution
    tpot_ms: Distribution
    e2e_ms: Distribution
    goodput_rps: float = math.nan
    goodput_tok_s: float = math.nan
    errors: dict[str, int] = field(default_factory=dict)  # error text (shortened) -> count
    load: dict[str, Any] = field(default_factory=dict)  # what was offered: concurrency or rate, requests
    #: each SLO percentile against its limit: ``{"ttft_p99": {"estimate", "low", "high", "verdict"}}``
    #: (:func:`tuner.measure.quantile.judge`: the interval and whether the verdict is sure)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: why the step was cut short once its verdict was settled (:mod:`tuner.measure.watch`), else None
    pruned: str | None = None
    #: prompt tokens per completed request, as the server counted them (a :class:`Distribution` of counts)
    input_tokens: Distribution = field(default_factory=Distribution)
    #: sessions only: ``{"1": {"count", "ttft_ms", "itl_ms"}, "2": ..., "later": ...}`` (else empty)
    turns: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed_fraction(self) -> float:
        n = self.completed + self.failed
        return self.failed / n if n else 1.0

    def metric(self, name: str) -> float:
        """An objective/SLO metric by name: ``output_throughput``, ``ttft_p99``, ``goodput`` ..."""
        simple = {
            "output_throughput": self.output_throughput_tok_s,
            "total_throughput": self.total_throughput_tok_s,
            "request_throughput": self.request_throughput_rps,
            "goodput": self.goodput_tok_s,
        }
        if name in simple:
            return simple[name]
        base, _, pct = name.rpartition("_")
        dist = {"ttft": self.ttft_ms, "itl": self.itl_ms, "tpot": self.tpot_ms, "e2e": self.e2e_ms}.get(base)
        if dist is None or pct not in ("mean", *(f"p{q}" for q in PERCENTILES)):
            raise KeyError(name)
        return float(getattr(dist, pct))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "output_throughput_tok_s": _finite(self.output_throughput_tok_s),
            "total_throughput_tok_s": _finite(self.total_throughput_tok_s),
            "request_throughput_rps": _finite(self.request_throughput_rps),
            "ttft_ms": self.ttft_ms.to_dict(),
            "itl_ms": self.itl_ms.to_dict(),
            "tpot_ms": self.tpot_ms.to_dict(),
            "e2e_ms": self.e2e_ms.to_dict(),
            "completed": self.completed,
            "failed": self.failed,
            "generated_tokens_total": self.generated_tokens_total,
            "prompt_tokens_total": self.prompt_tokens_total,
            "duration_s": _finite(self.duration_s),
            "goodput_rps": _finite(self.goodput_rps),
            "goodput_tok_s": _finite(self.goodput_tok_s),
        }
        if self.errors:
            d["errors"] = dict(self.errors)
        if self.load:
            d["load"] = dict(self.load)
        if self.checks:
            d["slo_checks"] = {k: dict(v) for k, v in self.checks.items()}
        if self.pruned is not None:
            d["pruned"] = self.pruned
        if self.input_tokens.count:
            d["input_tokens"] = {**self.input_tokens.to_dict(), "count": self.input_tokens.count}
        if self.turns:
            d["turns"] = {k: dict(v) for k, v in self.turns.items()}
        return d

    @property
    def uncertain(self) -> bool:
        """Whether some SLO percentile's interval holds its limit (the verdict could go either way)."""
        return any(c.get("verdict") == "uncertain" for c in self.checks.values())

    @property
    def bounded(self) -> bool:
        """Whether every SLO percentile has an upper bound (enough requests for its interval)."""
        return all(c.get("high") is not None for c in self.checks.values())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Summary:
        """Inverse of :meth:`to_dict` (``None`` back to ``nan``)."""

        def dist(x: Mapping[str, Any] | None) -> Distribution:
            x = x or {}
            return Distribution(
                _nan(x.get("mean")),
                _nan(x.get("p50")),
                _nan(x.get("p90")),
                _nan(x.get("p99")),
                int(x.get("count") or 0),
                _nan(x.get("p95")),
            )

        return cls(
            duration_s=_nan(d.get("duration_s")),
            completed=int(d.get("completed", 0)),
            failed=int(d.get("failed", 0)),
            generated_tokens_total=int(d.get("generated_tokens_total", 0)),
            prompt_tokens_total=int(d.get("prompt_tokens_total", 0)),
            output_throughput_tok_s=_nan(d.get("output_throughput_tok_s")),
            total_throughput_tok_s=_nan(d.get("total_throughput_tok_s")),
            request_throughput_rps=_nan(d.get("request_throughput_rps")),
            ttft_ms=dist(d.get("ttft_ms")),
            itl_ms=dist(d.get("itl_ms")),
            tpot_ms=dist(d.get("tpot_ms")),
            e2e_ms=dist(d.get("e2e_ms")),
            goodput_rps=_nan(d.get("goodput_rps")),
            goodput_tok_s=_nan(d.get("goodput_tok_s")),
            errors=dict(d.get("errors") or {}),
            load=dict(d.get("load") or {}),
            checks={str(k): dict(v) for k, v in (d.get("slo_checks") or {}).items()},
            pruned=d.get("pruned"),
            input_tokens=dist(d.get("input_tokens")),
            turns={str(k): dict(v) for k, v in (d.get("turns") or {}).items()},
        )


def summarize(
    records: Iterable[RequestRecord],
    slo: Mapping[str, float] | None = None,
    load: Mapping[str, Any] | None = None,
    pruned: str | None = None,
) -> Summary:
    """Compute a :class:`Summary` from records. Warm-up records are ignored, and so are requests cut short
    on purpose (``error == CANCELLED``: a settled step, given as ``pruned``, or Ctrl-C).

    ``slo`` maps ``ttft_p99``/``tpot_p99``/``itl_p99``/``e2e_p99`` (and p90/p50 variants) to a limit in ms;
    a request counts towards goodput when its own TTFT, TPOT (for an ITL limit too) and E2E are within them,
    and each percentile limit is judged with its interval (``checks``).
    """
    measured = [r for r in records if not r.warmup and r.error != CANCELLED]
    done = [r for r in measured if r.ok]
    failed = len(measured) - len(done)

    errors: dict[str, int] = {}
    for r in measured:
        if r.error is not None:
            key = r.error[:120]
            errors[key] = errors.get(key, 0) + 1

    if measured:
        t0 = min(r.send_time for r in measured)
        ends = [r.end_time for r in measured if r.end_time is not None]
        t1 = max(ends) if ends else t0
        duration = max(t1 - t0, 0.0)
    else:
        duration = 0.0

    out_tokens = np.array([_output_tokens(r) for r in done], dtype=float)
    in_tokens = np.array([r.prompt_tokens or 0 for r in done], dtype=float)
    ttft = np.array(
        [(r.first_token_time - r.send_time) * 1e3 for r in done if r.first_token_time is not None]
    )
    e2e = np.array([(r.end_time - r.send_time) * 1e3 for r in done if r.end_time is not None])
    itl = _itl_ms(done)
    tpot_per_req = np.array([_tpot_ms(r) for r in done], dtype=float)
    tpot = tpot_per_req[~np.isnan(tpot_per_req)]

    gen_total = int(out_tokens.sum())
    prompt_total = int(in_tokens.sum())

    def rate(x: float) -> float:
        return x / duration if duration > 0 else math.nan

    good_rps = good_tok = math.nan
    checks: dict[str, dict[str, Any]] = {}
    if slo:
        good = [r for r in done if _meets(r, slo)]
        good_rps = rate(len(good))
        good_tok = rate(float(sum(_output_tokens(r) for r in good)))
        checks = _checks(slo, {"ttft": ttft, "itl": itl, "tpot": tpot, "e2e": e2e})

    return Summary(
        duration_s=duration,
        completed=len(done),
        failed=failed,
        generated_tokens_total=gen_total,
        prompt_tokens_total=prompt_total,
        output_throughput_tok_s=rate(gen_total) if done else 0.0,
        total_throughput_tok_s=rate(gen_total + prompt_total) if done else 0.0,
        request_throughput_rps=rate(len(done)) if done else 0.0,
        ttft_ms=Distribution.of(ttft),
        itl_ms=Distribution.of(itl),
        tpot_ms=Distribution.of(tpot),
        e2e_ms=Distribution.of(e2e),
        goodput_rps=good_rps,
        goodput_tok_s=good_tok,
        errors=errors,
        load=dict(load or {}),
        checks=checks,
        pruned=pruned,
        input_tokens=Distribution.of([r.prompt_tokens for r in done if r.prompt_tokens is not None]),
        turns=_by_turn(done),
    )


def _itl_ms(done: Sequence[RequestRecord]) -> np.ndarray:
    """Every gap between consecutive output chunks of ``done``, pooled, in ms."""
    parts = [np.diff(np.asarray(r.token_times, dtype=float)) * 1e3 for r in done if len(r.token_times) > 1]
    return np.concatenate(parts) if parts else np.array([])


def _by_turn(done: Sequence[RequestRecord]) -> dict[str, dict[str, Any]]:
    """TTFT and ITL by turn index (1-based) and for every later turn together; empty without sessions."""
    if not any(r.turn for r in done):
        return {}
    groups: dict[str, list[RequestRecord]] = {}
    for r in sorted(done, key=lambda r: r.turn):
        groups.setdefault(str(r.turn + 1), []).append(r)
    groups["later"] = [r for r in done if r.turn]
    return {
        k: {
            "count": len(rs),
            "ttft_ms": Distribution.of(
                [(r.first_token_time - r.send_time) * 1e3 for r in rs if r.first_token_time is not None]
            ).to_dict(),
            "itl_ms": Distribution.of(_itl_ms(rs)).to_dict(),
        }
        for k, rs in groups.items()
    }


def _checks(slo: Mapping[str, float], samples: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Each percentile limit judged against its samples, with its interval (:func:`tuner.measure.quantile.judge`)."""
    checks: dict[str, dict[str, Any]] = {}
    for name, limit in slo.items():
        q, values = quantile_of(name), samples.get(name.split("_")[0])
        if q is not None and values is not None:
            checks[name] = judge(values, q, limit).to_dict()
    return checks


def _output_tokens(r: RequestRecord) -> int:
    if r.output_tokens is not None:
        return r.output_tokens
    return sum(r.chunk_tokens) if r.chunk_tokens else len(r.token_times)


def _tpot_ms(r: RequestRecord) -> float:
    n = _output_tokens(r)
    if n <= 1 or r.first_token_time is None or r.end_time is None:
        return math.nan
    return (r.end_time - r.first_token_time) * 1e3 / (n - 1)


def _meets(r: RequestRecord, slo: Mapping[str, float]) -> bool:
    """A request's own TTFT, TPOT and E2E within their limits (:mod:`tuner.measure.slo`); a latency the
    request has no figure for (TPOT of a one-token answer) is not held against it."""
    for name, limit in slo.items():
        v = _request_latency_ms(r, request_latency(name))
        if not math.isnan(v) and not within(v, limit):
            return False
    return True


def _request_latency_ms(r: RequestRecord, kind: RequestLatency | None) -> float:
    if kind == "ttft" and r.first_token_time is not None:
        return (r.first_token_time - r.send_time) * 1e3
    if kind == "tpot":
        return _tpot_ms(r)
    if kind == "e2e" and r.end_time is not None:
        return (r.end_time - r.send_time) * 1e3
    return math.nan


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def records_to_dicts(records: Iterable[RequestRecord]) -> list[dict[str, Any]]:
    """Records as plain dicts (for saving raw timestamps beside a trial's log)."""
    return [asdict(r) for r in records]
