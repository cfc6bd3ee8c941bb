"""Prometheus text exposition -> samples -> vLLM's server-side view. Pure.

Layers:

* :func:`parse` reads the text format (``# HELP``/``# TYPE`` lines, labels with escapes, ``NaN``/``+Inf``,
  optional timestamps, OpenMetrics exemplars and ``# EOF``) into an :class:`Exposition` of :class:`Sample`.
* :class:`Exposition` answers sums over label sets (``total``), label-matched series (``select``),
  cumulative :class:`Histogram` s and ``*_info`` labels.
* :func:`vllm_metrics` picks what tuner needs from vLLM's ``/metrics`` (new names first, older ones as
  fallbacks) into :class:`VllmMetrics`; :func:`diff` turns two snapshots into a run's delta.

Aggregation contract: counters, histograms and count-like gauges are **summed** over label sets (engines,
model names, finished reasons); ratio gauges (``*_perc``) are **averaged**. A metric that is absent is
``None``, never 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Exposition",
    "Histogram",
    "PrometheusParseError",
    "Sample",
    "VllmMetrics",
    "counter_delta",
    "histogram_delta",
    "parse",
    "vllm_metrics",
]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: ``name{labels} value [timestamp_ms]``. Labels are sorted pairs."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp_ms: int | None = None

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram summed over label sets: ``buckets`` are ``(le, cumulative count)``, by ``le``."""

    sum: float
    count: float
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def mean(self) -> float | None:
        """``sum / count``, or None for an empty histogram."""
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q``-quantile like PromQL's ``histogram_quantile`` (linear inside a bucket).

        None when empty; the largest finite bound when the rank falls in the ``+Inf`` bucket.
        """
        if not 0 <= q <= 1:
            raise ValueError("q must lie in [0, 1]")
        if not self.buckets or self.buckets[-1][1] <= 0:
            return None
        total = self.buckets[-1][1]
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for le, cum in self.buckets:
            if cum >= rank:
                if math.isinf(le):
                    return lower_bound
                if cum == lower_count:
                    return le
                return lower_bound + (le - lower_bound) * (rank - lower_count) / (cum - lower_count)
            lower_bound, lower_count = le, cum
        return lower_bound

    def minus(self, before: Histogram) -> Histogram:
        """This histogram less an earlier one of the same series; a reset (count went down) gives self."""
        if self.count < before.count or self.sum < before.sum - 1e-9:
            return self
        prev = dict(before.buckets)
        buckets = tuple((le, max(0.0, cum - prev.get(le, 0.0))) for le, cum in self.buckets)
        return Histogram(sum=self.sum - before.sum, count=self.count - before.count, buckets=buckets)


@dataclass
class Exposition:
    """Parsed ``/metrics`` text: samples in order, and each family's declared type (``# TYPE``)."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def select(self, name: str, **match: str) -> list[Sample]:
        """Samples named ``name`` whose labels include every ``match`` pair."""
        return [s for s in self.samples if s.name == name and all(s.label(k) == v for k, v in match.items())]

    def total(self, name: str, **match: str) -> float | None:
        """The sum over the matching label sets, or None when there is no such sample."""
        found = self.select(name, **match)
        return math.fsum(s.value for s in found) if found else None

    def mean(self, name: str, **match: str) -> float | None:
        """The mean over the matching label sets (for ratio gauges), or None."""
        found = self.select(name, **match)
        return math.fsum(s.value for s in found) / len(found) if found else None

    def histogram(self, name: str, **match: str) -> Histogram | None:
        """``name_sum``, ``name_count`` and ``name_bucket`` summed over label sets, or None if absent."""
        total_sum = self.total(f"{name}_sum", **match)
        total_count = self.total(f"{name}_count", **match)
        if total_sum is None or total_count is None:
            return None
        per_le: dict[float, float] = {}
        for s in self.select(f"{name}_bucket", **match):
            le = s.label("le")
            if le is None:
                continue
            bound = _parse_float(le)
            per_le[bound] = per_le.get(bound, 0.0) + s.value
        return Histogram(sum=total_sum, count=total_count, buckets=tuple(sorted(per_le.items())))

    def info(self, name: str) -> dict[str, str] | None:
        """The labels of an ``*_info`` series (the first label set), or None if absent."""
        found = self.select(name)
        return found[0].label_dict if found else None


class PrometheusParseError(ValueError):
    """A line of the exposition that does not follow the text format (strict parsing only)."""


def _parse_float(text: str) -> float:
    t = text.strip()
    low = t.lower()
    if low in ("+inf", "inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low == "nan":
        return math.nan
    return float(t)


def _parse_labels(line: str, i: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """Parse ``{a="x",b="y"}`` starting at ``line[i] == "{"``; return the sorted pairs and the index after."""
    pairs: list[tuple[str, str]] = []
    i += 1
    n = len(line)
    while True:
        while i < n and line[i] in " \t,":
            i += 1
        if i < n and line[i] == "}":
            return tuple(sorted(pairs)), i + 1
        m = _LABEL_NAME.match(line, i)
        if not m:
            raise PrometheusParseError(f"bad label name at column {i + 1}")
        key = m.group(0)
        i = m.end()
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] != "=":
            raise PrometheusParseError(f"expected '=' after label {key!r}")
        i += 1
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] != '"':
            raise PrometheusParseError(f"expected '\"' to open the value of label {key!r}")
        i += 1
        out: list[str] = []
        while True:
            if i >= n:
                raise PrometheusParseError(f"unterminated value of label {key!r}")
            c = line[i]
            if c == "\\" and i + 1 < n:
                out.append(_ESCAPES.get(line[i + 1], "\\" + line[i + 1]))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                out.append(c)
                i += 1
        pairs.append((key, "".join(out)))


def _parse_sample(line: str) -> Sample:
    m = _NAME.match(line)
    if not m:
        raise PrometheusParseError("expected a metric name")
    name = m.group(0)
    i = m.end()
    labels: tuple[tuple[str, str], ...] = ()
    if i < len(line) and line[i] == "{":
        labels, i = _parse_labels(line, i)
    rest = line[i:]
    if " # " in rest:  # an OpenMetrics exemplar follows the value
        rest = rest.split(" # ", 1)[0]
    parts = rest.split()
    if not parts or len(parts) > 2:
        raise PrometheusParseError("expected 'value [timestamp]' after the name")
    try:
        value = _parse_float(parts[0])
        ts = int(float(parts[1])) if len(parts) == 2 else None
    except ValueError:
        raise PrometheusParseError(f"bad number in {rest.strip()!r}") from None
    return Sample(name=name, labels=labels, value=value, timestamp_ms=ts)


def parse(text: str, *, strict: bool = False) -> Exposition:
    """Parse Prometheus text exposition (format 0.0.4; OpenMetrics' extras are tolerated).

    With ``strict`` a malformed line raises :class:`PrometheusParseError` naming the line number; without,
    it is skipped (a scrape must not fail a trial over one odd line).
    """
    expo = Exposition()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                expo.types[parts[2]] = parts[3].strip()
            continue
        try:
            expo.samples.append(_parse_sample(line))
        except PrometheusParseError as e:
            if strict:
                raise PrometheusParseError(f"line {number}: {e}: {line[:120]!r}") from None
    return expo


# ----------------------------------------------------------------------------------------------- vLLM

#: vLLM metric names, newest first (vLLM renamed several in the V1 engine)
TTFT = ("vllm:time_to_first_token_seconds",)
ITL = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
E2E = ("vllm:e2e_request_latency_seconds",)
QUEUE_TIME = ("vllm:request_queue_time_seconds",)
GENERATION_TOKENS = ("vllm:generation_tokens_total",)
PROMPT_TOKENS = ("vllm:prompt_tokens_total",)
PREEMPTIONS = ("vllm:num_preemptions_total",)
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
REQUEST_SUCCESS = ("vllm:request_success_total",)
KV_CACHE_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
CACHE_CONFIG = "vllm:cache_config_info"


@dataclass(frozen=True)
class VllmMetrics:
    """What tuner reads from one vLLM ``/metrics`` scrape (or, after :func:`diff`, a run's delta).

    Histograms and counters are cumulative since the server started (a delta after :func:`diff`); gauges
    are the value at the scrape (the *after* scrape's, after :func:`diff`). ``kv_cache_usage`` is a
    fraction (1.0 = full). ``cache_config`` holds ``vllm:cache_config_info``'s labels as strings.
    """

    ttft: Histogram | None = None
    itl: Histogram | None = None
    e2e: Histogram | None = None
    queue_time: Histogram | None = None
    generation_tokens: float | None = None
    prompt_tokens: float | None = None
    preemptions: float | None = None
    prefix_cache_queries: float | None = None
    prefix_cache_hits: float | None = None
    requests_succeeded: float | None = None
    kv_cache_usage: float | None = None
    requests_running: float | None = None
    requests_waiting: float | None = None
    cache_config: Mapping[str, str] = field(default_factory=dict)

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        """Hit tokens / queried tokens, or None when nothing was queried."""
        if self.prefix_cache_queries and self.prefix_cache_hits is not None:
            return self.prefix_cache_hits / self.prefix_cache_queries
        return None

    def _config_number(self, key: str) -> float | None:
        text = self.cache_config.get(key)
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            return None  # "None" and friends

    @property
    def num_gpu_blocks(self) -> int | None:
        v = self._config_number("num_gpu_blocks")
        return int(v) if v is not None else None

    @property
    def block_size(self) -> int | None:
        v = self._config_number("block_size")
        return int(v) if v is not None else None

    @property
    def gpu_memory_utilization(self) -> float | None:
        return self._config_number("gpu_memory_utilization")

    @property
    def kv_cache_size_tokens(self) -> int | None:
        v = self._config_number("kv_cache_size_tokens")
        return int(v) if v is not None else None


def _first(expo: Exposition, names: Iterable[str], how: str = "total") -> float | None:
    for name in names:
        v = expo.mean(name) if how == "mean" else expo.total(name)
        if v is not None:
            return v
    return None


def _first_histogram(expo: Exposition, names: Iterable[str]) -> Histogram | None:
    for name in names:
        h = expo.histogram(name)
        if h is not None:
            return h
    return None


def vllm_metrics(source: str | Exposition) -> VllmMetrics:
    """Pick tuner's view out of vLLM's ``/metrics`` (text or a parsed :class:`Exposition`)."""
    expo = _expo(source)
    info = expo.info(CACHE_CONFIG) or {}
    return VllmMetrics(
        ttft=_first_histogram(expo, TTFT),
        itl=_first_histogram(expo, ITL),
        e2e=_first_histogram(expo, E2E),
        queue_time=_first_histogram(expo, QUEUE_TIME),
        generation_tokens=_first(expo, GENERATION_TOKENS),
        prompt_tokens=_first(expo, PROMPT_TOKENS),
        preemptions=_first(expo, PREEMPTIONS),
        prefix_cache_queries=_first(expo, PREFIX_QUERIES),
        prefix_cache_hits=_first(expo, PREFIX_HITS),
        requests_succeeded=_first(expo, REQUEST_SUCCESS),
        kv_cache_usage=_first(expo, KV_CACHE_USAGE, how="mean"),
        requests_running=_first(expo, RUNNING),
        requests_waiting=_first(expo, WAITING),
        cache_config=info,
    )


def _counter_delta(before: float | None, after: float | None) -> float | None:
    if after is None:
        return None
    if before is None or after < before:  # absent before, or the server restarted: the counter reset
        return after
    return after - before


def _histogram_delta(before: Histogram | None, after: Histogram | None) -> Histogram | None:
    if after is None:
        return None
    return after if before is None else after.minus(before)


# ------------------------------------------------------------------------------------- name-level helpers


def _expo(source: str | Exposition) -> Exposition:
    return parse(source) if isinstance(source, str) else source


def counter_delta(before: str | Exposition, after: str | Exposition, name: str) -> float | None:
    """``after - before`` of a counter summed over label sets; None if absent after; a reset gives after."""
    return _counter_delta(_expo(before).total(name), _expo(after).total(name))


def histogram_delta(
    before: str | Exposition, after: str | Exposition, name: str
) -> tuple[float, float] | None:
    """``(sum, count)`` of a histogram's change between two scrapes (``name`` without ``_sum``/``_count``);
    None if absent after; a reset gives the after values."""
    h = _histogram_delta(_expo(before).histogram(name), _expo(after).histogram(name))
    return (h.sum, h.count) if h is not None else None
