"""What a metric is called where people read it: the one name table of every report. Pure.

A study file and the stored record name a metric as tuner always has (``ttft_p99``, ``output_throughput``:
:meth:`tuner.measure.metrics.Summary.metric`'s names); those stay. What users read is spelt once, here:

* **key** — the name in JSON and CSV output, vLLM's where ``vllm bench serve`` has one: ``p99_ttft_ms``,
  ``mean_itl_ms``, ``p50_e2el_ms`` (vLLM writes end-to-end latency ``e2el``), ``output_throughput``,
  ``total_token_throughput``, ``request_throughput``; tuner's per-token SLO goodput is
  ``slo_goodput_tok_s`` (vLLM's ``request_goodput`` is req/s, a different figure).
* **label** — the words in tables and one-line summaries: ``TTFT p99``, ``output throughput``.
* **unit** — ``ms``, ``tok/s``, ``req/s`` (empty for an unknown metric).

The score of a capacity-mode study is the output throughput of its best step that met the SLO: called
:data:`CAPACITY` ("SLO capacity", in tok/s), never "goodput", which vLLM uses for requests per second that
met the SLO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the word for a configuration's score in capacity mode
CAPACITY = "SLO capacity"

_LATENCIES = {
    "ttft": ("TTFT", "ttft"),
    "itl": ("ITL", "itl"),
    "tpot": ("TPOT", "tpot"),
    "e2e": ("E2E", "e2el"),
}
_STATS = ("mean", "p50", "p90", "p95", "p99")
_RATES = {
    "output_throughput": ("output throughput", "output_throughput", "tok/s"),
    "total_throughput": ("total throughput", "total_token_throughput", "tok/s"),
    "request_throughput": ("request throughput", "request_throughput", "req/s"),
    "goodput": ("SLO goodput", "slo_goodput_tok_s", "tok/s"),
}


@dataclass(frozen=True)
class Name:
    """How one metric is written for people: ``key`` (JSON/CSV), ``label`` (tables), ``unit``."""

    metric: str  # tuner's own name (study file, stored record)
    key: str
    label: str
    unit: str

    def header(self, limit: float | None = None) -> str:
        """``TTFT p99 ms (<=1000)``; without a limit ``TTFT p99 ms``."""
        text = f"{self.label} {self.unit}".rstrip()
        return text if limit is None else f"{text} (<={limit:g})"

    def csv_header(self) -> str:
        """The key with its unit where the key does not carry it: ``output_throughput_tok_s``,
        ``p99_ttft_ms``."""
        if not self.unit or self.key.endswith(("_ms", "_tok_s")):
            return self.key
        return f"{self.key}_{self.unit.replace('/', '_')}"


def name(metric: str) -> Name:
    """The :class:`Name` of tuner's metric name ``metric`` (``ttft_p99``, ``output_throughput``...); an
    unknown name is written as it is, without a unit."""
    if metric in _RATES:
        label, key, unit = _RATES[metric]
        return Name(metric, key, label, unit)
    base, _, stat = metric.rpartition("_")
    if base in _LATENCIES and stat in _STATS:
        label, vllm = _LATENCIES[base]
        return Name(metric, f"{stat}_{vllm}_ms", f"{label} {stat}", "ms")
    return Name(metric, metric, metric, "")


def unit(metric: str) -> str:
    """``tok/s`` for throughputs, ``req/s`` for request rates, ``ms`` for latencies, else ""."""
    return name(metric).unit


def key(metric: str) -> str:
    """The JSON/CSV name of ``metric`` (``p99_ttft_ms``)."""
    return name(metric).key


def label(metric: str) -> str:
    """The table name of ``metric`` (``TTFT p99``)."""
    return name(metric).label


def score_label(metric: str, capacity_mode: bool) -> str:
    """What the first objective is called in a report: :data:`CAPACITY` for a capacity-mode study's
    output throughput, else its :func:`label`."""
    return CAPACITY if capacity_mode and metric == "output_throughput" else label(metric)


#: the stored summary's scalar fields (``Summary.to_dict``) -> vLLM's names
_SUMMARY_KEYS = {
    "output_throughput_tok_s": "output_throughput",
    "total_throughput_tok_s": "total_token_throughput",
    "request_throughput_rps": "request_throughput",
    "goodput_rps": "request_goodput",
    "goodput_tok_s": "slo_goodput_tok_s",
    "completed": "completed",
    "failed": "failed",
    "generated_tokens_total": "total_output_tokens",
    "prompt_tokens_total": "total_input_tokens",
    "duration_s": "duration",
}


def flat_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A stored summary (``Summary.to_dict()``, any version) as one flat mapping in vLLM's names:
    ``output_throughput``, ``p99_ttft_ms``, ``mean_e2el_ms``, ``completed`` ... (floats :func:`rounded`;
    what is not stored is left out)."""
    out: dict[str, Any] = {}
    for stored, vllm in _SUMMARY_KEYS.items():
        if stored in summary:
            out[vllm] = rounded(summary[stored])
    for base in _LATENCIES:
        dist = summary.get(f"{base}_ms")
        if isinstance(dist, Mapping):
            for stat, v in dist.items():
                if stat in _STATS:
                    out[key(f"{base}_{stat}")] = rounded(v)
    return out


def rounded(v: Any) -> Any:
    """A float for JSON/CSV: 4 significant figures, whole numbers kept whole (``4503.6`` -> ``4504.0``,
    ``526.93`` -> ``526.9``, ``0.69963`` -> ``0.6996``); anything else (None, ints, text) as it is."""
    if not isinstance(v, float) or not math.isfinite(v) or v == 0:
        return v
    digits = max(4 - 1 - math.floor(math.log10(abs(v))), 0)
    return round(v, digits)
