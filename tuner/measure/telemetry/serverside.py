"""The server-side view of a load run, from vLLM's Prometheus ``/metrics``, and a one-word bottleneck.

:class:`MetricsPoller` (async; the ``aiohttp`` session is passed in) scrapes ``/metrics`` once on entry,
every ``interval_s`` (default 1 s) while the load runs, and once more on exit. :meth:`MetricsPoller.view`
turns the scrapes into a :class:`ServerSideView`:

* **KV-cache usage** mean and max, a fraction 0..1 (``vllm:kv_cache_usage_perc``; before vLLM 0.10
  ``vllm:gpu_cache_usage_perc``; averaged over engines when there are several);
* **preemptions**: the increase of ``vllm:num_preemptions_total`` between the first and last scrape;
* **waiting** requests max and mean, and the share of scrapes with any waiting (``vllm:num_requests_waiting``);
* **running** requests mean and max (``vllm:num_requests_running``);
* **prefix-cache hit rate**: increase of hits / increase of queries (``vllm:prefix_cache_{hits,queries}_total``,
  before 0.10 ``vllm:gpu_prefix_cache_{hits,queries}_total``); ``None`` when there were no queries.

* **KV-cache size** in tokens (``num_gpu_blocks x block_size`` of ``vllm:cache_config_info``), to check
  :func:`tuner.measure.memory.check_fits`' estimate against what vLLM allocated.

Parsing and names are :mod:`tuner.measure.telemetry.prometheus`' (:func:`~tuner.measure.telemetry.prometheus.vllm_metrics`):
counters and gauges are summed over label sets (engines, models), KV usage is averaged. A failed
scrape is counted in ``errors`` and skipped; nothing here raises for a missing, slow or odd ``/metrics``.

:func:`bottleneck` names why a trial is where it is; its rule is in its docstring. :func:`agreement` puts
the server's own latency and token counts over the measured phase (two :func:`scrape_text` scrapes) beside
the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import aiohttp

from tuner.measure.metrics import Summary
from tuner.measure.telemetry.prometheus import counter_delta, histogram_delta, parse, vllm_metrics

Clock = Callable[[], float]

#: KV usage at or above this is "full" (vLLM preempts when it cannot allocate a block)
KV_FULL = 0.95
#: KV usage at or above this, with requests waiting below max-num-seqs, means admission is held by KV
KV_HIGH = 0.80
#: waiting requests in at least this share of scrapes is sustained queueing, not a burst at the start
WAITING_SUSTAINED = 0.2

#: one scrape: the signals above, ``None`` when the server does not export one
Sample = dict[str, float | None]


# -- one scrape -------------------------------------------------------------------------------------------


def sample_from_text(text: str) -> Sample:
    """The signals of one scrape: ``kv``, ``running``, ``waiting``, ``preemptions``, ``prefix_hits``,
    ``prefix_queries`` and ``kv_tokens`` (``num_gpu_blocks x block_size`` from ``vllm:cache_config_info``);
    ``None`` for what the server does not export. Odd lines are skipped, never raised."""
    m = vllm_metrics(parse(text))
    blocks, block = m.num_gpu_blocks, m.block_size
    return {
        "kv": m.kv_cache_usage,
        "running": m.requests_running,
        "waiting": m.requests_waiting,
        "preemptions": m.preemptions,
        "prefix_hits": m.prefix_cache_hits,
        "prefix_queries": m.prefix_cache_queries,
        "kv_tokens": float(blocks * block) if blocks is not None and block is not None else None,
    }


# -- the view ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSideView:
    """What ``/metrics`` showed during one load run. Fractions are 0..1; ``None`` is "not exported"."""

    samples: int = 0
    errors: int = 0
    duration_s: float = 0.0
    kv_cache_usage_mean: float | None = None
    kv_cache_usage_max: float | None = None
    preemptions: int | None = None
    waiting_max: float | None = None
    waiting_mean: float | None = None
    waiting_fraction: float | None = None
    running_mean: float | None = None
    running_max: float | None = None
    prefix_cache_hit_rate: float | None = None
    kv_cache_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``server_metrics`` stored with a trial (``None`` entries left out)."""
        return {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items() if v is not None
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServerSideView:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _delta(first: float | None, last: float | None) -> float | None:
    if first is None or last is None:
        return None
    return last - first if last >= first else last  # a counter that went down was reset: count from 0


def compute_view(stamped: Sequence[tuple[float, Sample]], errors: int = 0) -> ServerSideView:
    """Pure: a :class:`ServerSideView` from ``(time, sample)`` pairs in time order."""
    if not stamped:
        return ServerSideView(errors=errors)
    samples = [s for _, s in stamped]

    def series(key: str) -> list[float]:
        return [x for s in samples if (x := s.get(key)) is not None]

    kv, running, waiting = series("kv"), series("running"), series("waiting")
    kv_tokens = series("kv_tokens")
    first, last = samples[0], samples[-1]
    pre = _delta(first.get("preemptions"), last.get("preemptions"))
    hits = _delta(first.get("prefix_hits"), last.get("prefix_hits"))
    queries = _delta(first.get("prefix_queries"), last.get("prefix_queries"))
    return ServerSideView(
        samples=len(samples),
        errors=errors,
        duration_s=round(stamped[-1][0] - stamped[0][0], 3),
        kv_cache_usage_mean=sum(kv) / len(kv) if kv else None,
        kv_cache_usage_max=max(kv) if kv else None,
        preemptions=round(pre) if pre is not None else None,
        waiting_max=max(waiting) if waiting else None,
        waiting_mean=sum(waiting) / len(waiting) if waiting else None,
        waiting_fraction=sum(1 for w in waiting if w > 0) / len(waiting) if waiting else None,
        running_mean=sum(running) / len(running) if running else None,
        running_max=max(running) if running else None,
        prefix_cache_hit_rate=(hits / queries) if hits is not None and queries else None,
        kv_cache_tokens=int(kv_tokens[-1]) if kv_tokens else None,
    )


class MetricsPoller:
    """Scrapes ``metrics_url`` on entry, every ``interval_s`` inside the ``async with`` block, and on exit.

    ``session`` is the caller's ``aiohttp.ClientSession`` (not closed here). Each scrape has its own
    ``timeout_s``; a failed one is counted, not raised. ``clock`` stamps scrapes (monotonic seconds), so
    :meth:`view` can be limited to a window such as one capacity step.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics_url: str,
        interval_s: float = 1.0,
        *,
        timeout_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s must be a positive number, got {interval_s!r}")
        self.session = session
        self.url = (
            metrics_url
            if metrics_url.rstrip("/").endswith("/metrics")
            else metrics_url.rstrip("/") + "/metrics"
        )
        self.interval_s = float(interval_s)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._stamped: list[tuple[float, Sample]] = []
        self._errors: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MetricsPoller:
        await self.scrape_once()
        self._task = asyncio.create_task(self._loop(), name="tuner-metrics-poller")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if exc_type is None:
            await self.scrape_once()

    async def _loop(self) -> None:
        last = self._clock()
        while True:
            await asyncio.sleep(min(self.interval_s, max(0.0, last + self.interval_s - self._clock())))
            last = self._clock()
            await self.scrape_once()

    async def scrape_once(self) -> bool:
        """One scrape; True when it was read and parsed. Only cancellation propagates."""
        t = self._clock()
        try:
            async with self.session.get(self.url, timeout=self.timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                text = await resp.text()
            sample = sample_from_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._errors.append(t)
            return False
        self._stamped.append((t, sample))
        return True

    def view(self, start: float | None = None, end: float | None = None) -> ServerSideView:
        """The view over scrapes stamped in ``[start, end]`` (default: all of them)."""

        def inside(t: float) -> bool:
            return (start is None or t >= start) and (end is None or t <= end)

        return compute_view(
            [(t, s) for t, s in self._stamped if inside(t)], errors=sum(1 for t in self._errors if inside(t))
        )


# -- before and after the measured phase -------------------------------------------------------------------


async def scrape_text(session: aiohttp.ClientSession, base_url: str) -> str | None:
    """The ``/metrics`` text of the server at ``base_url``, or None when it does not answer 200 in 10 s."""
    with contextlib.suppress(Exception):
        async with session.get(base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status == 200:
                return await r.text()
    return None


def agreement(before: str | None, after: str | None, steps: Sequence[Summary]) -> dict[str, Any]:
    """The server's own view of the measured requests (the Prometheus deltas between the ``before`` and
    ``after`` scrapes) beside the client's (its ``steps``): ``{"agreement": {...}}``, or {} without both."""
    if before is None or after is None:
        return {}
    out: dict[str, Any] = {}
    ttft = histogram_delta(before, after, "vllm:time_to_first_token_seconds")
    itl = histogram_delta(before, after, "vllm:inter_token_latency_seconds") or histogram_delta(
        before, after, "vllm:time_per_output_token_seconds"
    )
    gen = counter_delta(before, after, "vllm:generation_tokens_total")
    if ttft and ttft[1] > 0:
        out["server_ttft_mean_ms"] = ttft[0] / ttft[1] * 1e3
        out["server_requests"] = int(ttft[1])
    if itl and itl[1] > 0:
        out["server_itl_mean_ms"] = itl[0] / itl[1] * 1e3
    if gen is not None:
        out["server_generation_tokens"] = int(gen)
    out["client_generation_tokens"] = sum(s.generated_tokens_total for s in steps)
    n = sum(s.completed for s in steps)
    if n:
        out["client_ttft_mean_ms"] = _weighted(steps, "ttft_ms")
        out["client_itl_mean_ms"] = _weighted(steps, "itl_ms")
    return {"agreement": out} if out else {}


def _weighted(steps: Sequence[Summary], attr: str) -> float | None:
    num = den = 0.0
    for s in steps:
        d = getattr(s, attr)
        if d.count and math.isfinite(d.mean):
            num += d.mean * d.count
            den += d.count
    return num / den if den else None


# -- the one word ------------------------------------------------------------------------------------------


def _get(d: Mapping[str, Any] | None, *path: str) -> float | None:
    cur: Any = d
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    if isinstance(cur, bool) or not isinstance(cur, int | float) or not math.isfinite(cur):
        return None
    return float(cur)


def bottleneck(
    view: ServerSideView | Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
    slo: Mapping[str, float] | None = None,
    *,
    max_num_seqs: int | None = None,
) -> str:
    """One word for why a trial is where it is: ``"kv-bound"``, ``"queueing"``, ``"compute-bound"`` or ``""``.

    ``view`` is a :class:`ServerSideView` (or its ``to_dict``); ``summary`` the scored
    ``Summary.to_dict()`` (``ttft_ms``, ``tpot_ms``, ``itl_ms``, ``generated_tokens_total``, ``completed``);
    ``slo`` the limits as ``Slo.limits()`` gives them (``{"ttft_p99": 1000.0, ...}``); ``max_num_seqs`` the
    trial's ``--max-num-seqs`` when known. The rule, first match wins:

    1. ``""`` when fewer than 2 scrapes were read or nothing ever ran (``running_max`` is 0 or unknown).
    2. Waiting is *sustained* when requests waited in at least 20 % of the scrapes, or when any waited and
       the TTFT p99 limit was broken (a burst that hurt TTFT).
    3. ``"kv-bound"``: any preemption, or KV usage max >= 0.95, or sustained waiting with KV usage max
       >= 0.80 while ``running_max`` stayed below ``max_num_seqs`` (below it, or unknown: KV held admission).
    4. ``"queueing"``: sustained waiting with KV headroom (``max-num-seqs`` reached, the token budget
       ``max-num-batched-tokens``, or arrivals above the service rate).
    5. ``"compute-bound"``: nothing waits for long and decode time dominates a request —
       TPOT p50 x (output tokens per request - 1) >= TTFT p50 — or the ITL/TPOT p99 limit was broken, or
       the summary lacks those figures (then the step time is all that is left).
    6. ``""`` otherwise (no waiting, prefill time dominates: no one word fits).
    """
    v = view.to_dict() if isinstance(view, ServerSideView) else dict(view)
    if (_get(v, "samples") or 0) < 2 or not (_get(v, "running_max") or 0) > 0:
        return ""
    limits = dict(slo or {})
    kv_max = _get(v, "kv_cache_usage_max")
    waiting_max = _get(v, "waiting_max") or 0.0
    waiting_fraction = _get(v, "waiting_fraction") or 0.0
    running_max = _get(v, "running_max") or 0.0
    ttft_p99 = _get(summary, "ttft_ms", "p99")
    ttft_broken = "ttft_p99" in limits and ttft_p99 is not None and ttft_p99 > limits["ttft_p99"]
    sustained = waiting_fraction >= WAITING_SUSTAINED or (waiting_max >= 1 and ttft_broken)

    if (_get(v, "preemptions") or 0) > 0 or (kv_max is not None and kv_max >= KV_FULL):
        return "kv-bound"
    below_cap = max_num_seqs is None or running_max < max_num_seqs
    if sustained and kv_max is not None and kv_max >= KV_HIGH and below_cap:
        return "kv-bound"
    if sustained:
        return "queueing"

    for name, key in (("itl_p99", "itl_ms"), ("tpot_p99", "tpot_ms")):
        got = _get(summary, key, "p99")
        if name in limits and got is not None and got > limits[name]:
            return "compute-bound"
    tpot = _get(summary, "tpot_ms", "p50")
    ttft = _get(summary, "ttft_ms", "p50")
    tokens, completed = _get(summary, "generated_tokens_total"), _get(summary, "completed")
    if tpot is None or ttft is None or not tokens or not completed:
        return "compute-bound"
    decode_ms = tpot * max(tokens / completed - 1, 0.0)
    return "compute-bound" if decode_ms >= ttft else ""
