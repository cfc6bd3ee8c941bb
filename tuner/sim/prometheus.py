"""The simulator's ``/metrics``: Prometheus exposition text with vLLM's metric names.

:class:`ServerMetrics` holds what the HTTP face observes (latency histograms in simulated seconds, finished
requests by reason) and renders it with the engine's gauges and counters (running and waiting requests,
KV-cache usage, preemptions, token and prefix-cache counters, the cache config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tuner.sim.engine import Engine, SimRequest

#: seconds; the upper buckets are common to TTFT and ITL, as in vLLM's own histograms
_SLOW = (0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, *_SLOW, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, *_SLOW)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: np.ndarray = field(init=False)
    total: float = 0.0
    n: float = 0.0

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.buckets) + 1)

    def observe(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        if values.size == 0:
            return
        w = np.ones(values.size) if weights is None else weights
        idx = np.searchsorted(np.asarray(self.buckets), values, side="left")
        np.add.at(self.counts, idx, w)
        self.total += float(np.sum(values * w))
        self.n += float(np.sum(w))

    def render(self, name: str, labels: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cum = np.cumsum(self.counts)
        for b, c in zip(self.buckets, cum[:-1], strict=True):
            out.append(f'{name}_bucket{{{labels},le="{b}"}} {float(c)}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {float(cum[-1])}')
        out.append(f"{name}_count{{{labels}}} {float(self.n)}")
        out.append(f"{name}_sum{{{labels}}} {self.total}")
        return out


@dataclass
class ServerMetrics:
    """Histograms (simulated seconds) and finished-request counts of one simulated server."""

    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    queue_time: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    success: dict[str, int] = field(default_factory=dict)

    def on_finish(self, r: SimRequest, reason: str) -> None:
        """Record one finished request (``reason``: ``length`` or ``stop``)."""
        if not math.isnan(r.first_token):
            self.ttft.observe(np.array([r.first_token - r.arrival]))
        self.e2e.observe(np.array([r.finish - r.arrival]))
        self.queue_time.observe(np.array([max(r.ready - r.arrival, 0.0)]))
        self.success[reason] = self.success.get(reason, 0) + 1

    def fold_itl(self, eng: Engine) -> None:
        """Move the engine's pending inter-token gaps into the ITL histogram."""
        if eng.itl_values:
            v = np.concatenate(eng.itl_values)
            w = np.concatenate(eng.itl_weights)
            eng.itl_values.clear()
            eng.itl_weights.clear()
            self.itl.observe(v, w)

    def render(self, eng: Engine, model_name: str, time_scale: float) -> str:
        """Prometheus exposition text with vLLM's metric names (histograms in simulated seconds)."""
        lab = f'engine="0",model_name="{model_name}"'
        lines = _engine_lines(eng, lab)
        lines += [
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success counter",
        ]
        for reason in ("length", "stop"):
            lines.append(
                f'vllm:request_success_total{{{lab},finished_reason="{reason}"}} {float(self.success.get(reason, 0))}'
            )
        lines += self.ttft.render(
            "vllm:time_to_first_token_seconds", lab, "Histogram of time to first token in seconds."
        )
        lines += self.itl.render(
            "vllm:inter_token_latency_seconds", lab, "Histogram of inter-token latency in seconds."
        )
        lines += self.e2e.render(
            "vllm:e2e_request_latency_seconds", lab, "Histogram of e2e request latency in seconds."
        )
        lines += self.queue_time.render(
            "vllm:request_queue_time_seconds", lab, "Histogram of time spent in WAITING phase for request."
        )
        p = eng.plan
        cache_labels = ",".join(
            f'{k}="{v}"'
            for k, v in (
                ("block_size", p.block_size),
                ("cache_dtype", p.config.kv_cache_dtype),
                ("enable_prefix_caching", p.prefix_caching),
                ("gpu_memory_utilization", p.config.gpu_memory_utilization),
                ("num_cpu_blocks", 0),
                ("num_gpu_blocks", p.num_blocks),
            )
        )
        lines += _gauge(
            "vllm:cache_config_info", 1.0, "Information of the LLMEngine CacheConfig", cache_labels
        )
        lines += _gauge(
            "tuner_sim_time_scale", time_scale, "Wall seconds per simulated second (tuner.sim).", lab
        )
        return "\n".join(lines) + "\n"


def _gauge(name: str, value: float, help_text: str, labels: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {float(value)}"]


def _counter(name: str, value: float, help_text: str, labels: str) -> list[str]:
    return [
        f"# HELP {name} {help_text}",
        f"# TYPE {name} counter",
        f"{name}_total{{{labels}}} {float(value)}",
    ]


def _engine_lines(eng: Engine, lab: str) -> list[str]:
    st = eng.stats
    used = eng.kv.used / eng.plan.num_blocks if eng.plan.num_blocks else 0.0
    waiting = len(eng.waiting) + len(eng._pending)
    return [
        *_gauge(
            "vllm:num_requests_running",
            len(eng.running),
            "Number of requests in model execution batches.",
            lab,
        ),
        *_gauge("vllm:num_requests_waiting", waiting, "Number of requests waiting to be processed.", lab),
        *_gauge("vllm:kv_cache_usage_perc", used, "KV-cache usage. 1 means 100 percent usage.", lab),
        *_counter(
            "vllm:num_preemptions", st.preemptions, "Cumulative number of preemption from the engine.", lab
        ),
        *_counter("vllm:prompt_tokens", st.prompt_tokens, "Number of prefill tokens processed.", lab),
        *_counter(
            "vllm:generation_tokens", st.generation_tokens, "Number of generation tokens processed.", lab
        ),
        *_counter(
            "vllm:prefix_cache_queries",
            st.prefix_queries,
            "Prefix cache queries, in terms of number of queried tokens.",
            lab,
        ),
        *_counter(
            "vllm:prefix_cache_hits",
            st.prefix_hits,
            "Prefix cache hits, in terms of number of cached tokens.",
            lab,
        ),
    ]
