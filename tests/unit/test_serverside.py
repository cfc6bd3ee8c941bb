"""The server-side view from /metrics: parsing, the view, the poller against a local HTTP server, the word."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tuner.measure.telemetry.serverside import (
    MetricsPoller,
    ServerSideView,
    bottleneck,
    compute_view,
    sample_from_text,
)


def metrics_text(
    *,
    running: float = 0,
    waiting: float = 0,
    kv: float = 0.0,
    preempt: float = 0,
    hits: float = 0,
    queries: float = 0,
    old_names: bool = False,
) -> str:
    """A /metrics body shaped like vLLM's (v1 engine, one engine)."""
    kv_name = "vllm:gpu_cache_usage_perc" if old_names else "vllm:kv_cache_usage_perc"
    pfx = "vllm:gpu_prefix_cache" if old_names else "vllm:prefix_cache"
    lab = 'engine="0",model_name="/root/models/llama8b-rand"'
    return f"""# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 1234.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{{lab}}} {running}
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{{lab}}} {waiting}
# TYPE {kv_name} gauge
{kv_name}{{{lab}}} {kv}
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{{{lab}}} {preempt}
vllm:num_preemptions_created{{{lab}}} 1.7636e+09
# TYPE {pfx}_queries counter
{pfx}_queries_total{{{lab}}} {queries}
{pfx}_hits_total{{{lab}}} {hits}
vllm:cache_config_info{{block_size="16",cache_dtype="auto",num_gpu_blocks="57606",note="a \\"q\\" {{b}}, c"}} 1.0
vllm:time_to_first_token_seconds_bucket{{{lab},le="+Inf"}} 300.0
"""


def test_odd_lines_are_skipped_and_cache_config_gives_kv_tokens() -> None:
    text = metrics_text(running=3, kv=0.5) + 'odd{a="}"} NaN\nbroken line\nx 1 1700000000000\n'
    s = sample_from_text(text)
    assert s["running"] == 3.0 and s["kv"] == 0.5
    assert s["kv_tokens"] == 57606 * 16


def test_sample_new_and_old_names_and_several_engines() -> None:
    s = sample_from_text(metrics_text(running=4, waiting=2, kv=0.25, preempt=1, hits=10, queries=20))
    assert s == {
        "kv": 0.25,
        "running": 4.0,
        "waiting": 2.0,
        "preemptions": 1.0,
        "prefix_hits": 10.0,
        "prefix_queries": 20.0,
        "kv_tokens": 57606 * 16.0,
    }
    old = sample_from_text(metrics_text(kv=0.75, hits=1, queries=2, old_names=True))
    assert old["kv"] == 0.75 and old["prefix_hits"] == 1.0
    two = (
        'vllm:kv_cache_usage_perc{engine="0"} 0.2\nvllm:kv_cache_usage_perc{engine="1"} 0.4\n'
        'vllm:num_requests_running{engine="0"} 3\nvllm:num_requests_running{engine="1"} 5\n'
    )
    s2 = sample_from_text(two)
    assert s2["kv"] == pytest.approx(0.3) and s2["running"] == 8.0 and s2["waiting"] is None
    assert sample_from_text("") == dict.fromkeys(s, None)
    assert s2["kv_tokens"] is None


def test_compute_view() -> None:
    texts = [
        metrics_text(running=0, waiting=0, kv=0.0, preempt=5, hits=100, queries=1000),
        metrics_text(running=8, waiting=4, kv=0.6, preempt=5, hits=150, queries=1100),
        metrics_text(running=16, waiting=0, kv=0.9, preempt=7, hits=400, queries=1600),
    ]
    view = compute_view([(float(i), sample_from_text(t)) for i, t in enumerate(texts)])
    assert view.samples == 3 and view.duration_s == 2.0
    assert view.kv_cache_usage_mean == pytest.approx(0.5) and view.kv_cache_usage_max == 0.9
    assert view.preemptions == 2
    assert view.waiting_max == 4 and view.waiting_fraction == pytest.approx(1 / 3)
    assert view.running_mean == 8 and view.running_max == 16
    assert view.prefix_cache_hit_rate == pytest.approx(300 / 600)
    assert view.kv_cache_tokens == 921_696
    d = view.to_dict()
    assert d["kv_cache_usage_max"] == 0.9 and d["preemptions"] == 2
    assert ServerSideView.from_dict({**d, "unknown": 1}).to_dict() == d
    assert compute_view([]).to_dict() == {"samples": 0, "errors": 0, "duration_s": 0.0}


def test_no_prefix_queries_gives_no_hit_rate() -> None:
    view = compute_view([(0.0, sample_from_text(metrics_text())), (1.0, sample_from_text(metrics_text()))])
    assert view.prefix_cache_hit_rate is None
    assert "prefix_cache_hit_rate" not in view.to_dict()


async def _serve(handler: Any) -> TestServer:
    app = web.Application()
    app.router.add_get("/metrics", handler)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_poller_scrapes_during_the_block() -> None:
    state = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        state["n"] += 1
        n = state["n"]
        return web.Response(
            text=metrics_text(running=n, waiting=0, kv=min(0.1 * n, 1.0), queries=10 * n, hits=n)
        )

    server = await _serve(handler)
    try:
        async with aiohttp.ClientSession() as session:
            async with MetricsPoller(session, str(server.make_url("/")), interval_s=0.02) as poller:
                await asyncio.sleep(0.15)
            view = poller.view()
    finally:
        await server.close()
    assert view.samples >= 4 and view.errors == 0
    assert view.running_max == state["n"]
    assert view.prefix_cache_hit_rate == pytest.approx(0.1)


async def test_poller_counts_failures_and_never_raises() -> None:
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            return web.Response(status=500, text="boom")
        return web.Response(text=metrics_text(running=1))

    server = await _serve(handler)
    url = str(server.make_url("/metrics"))
    try:
        async with aiohttp.ClientSession() as session:
            async with MetricsPoller(session, url, interval_s=0.02) as poller:
                await asyncio.sleep(0.12)
            view = poller.view()
            # a server that is gone: every scrape fails, still no exception
            dead = MetricsPoller(session, "http://127.0.0.1:9/metrics", interval_s=0.02, timeout_s=0.5)
            async with dead:
                await asyncio.sleep(0.03)
            assert dead.view().samples == 0 and dead.view().errors >= 2
    finally:
        await server.close()
    assert view.samples >= 2 and view.errors >= 1


def test_poller_window() -> None:
    poller = MetricsPoller.__new__(MetricsPoller)
    poller._stamped = [(float(t), sample_from_text(metrics_text(running=t))) for t in range(5)]
    poller._errors = [2.5]
    w = poller.view(start=1, end=3)
    assert w.samples == 3 and w.running_max == 3 and w.errors == 1


def _view(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "samples": 20,
        "running_max": 64,
        "running_mean": 50,
        "kv_cache_usage_max": 0.3,
        "waiting_max": 0,
        "waiting_fraction": 0.0,
        "preemptions": 0,
    }
    base.update(kw)
    return base


SUMMARY_DECODE = {
    "ttft_ms": {"p50": 200.0, "p99": 400.0},
    "tpot_ms": {"p50": 30.0, "p99": 40.0},
    "itl_ms": {"p99": 45.0},
    "generated_tokens_total": 25600,
    "completed": 100,
}
SLO = {"ttft_p99": 1000.0, "itl_p99": 50.0}


@pytest.mark.parametrize(
    ("view", "summary", "kw", "word"),
    [
        (_view(samples=1), SUMMARY_DECODE, {}, ""),
        (_view(running_max=0), SUMMARY_DECODE, {}, ""),
        (_view(preemptions=3), SUMMARY_DECODE, {}, "kv-bound"),
        (_view(kv_cache_usage_max=0.97), SUMMARY_DECODE, {}, "kv-bound"),
        (
            _view(kv_cache_usage_max=0.85, waiting_max=40, waiting_fraction=0.6),
            SUMMARY_DECODE,
            {"max_num_seqs": 256},
            "kv-bound",
        ),
        # waiting with KV at 85 % but running at the max-num-seqs cap: the cap holds admission
        (
            _view(kv_cache_usage_max=0.85, waiting_max=40, waiting_fraction=0.6, running_max=64),
            SUMMARY_DECODE,
            {"max_num_seqs": 64},
            "queueing",
        ),
        (_view(kv_cache_usage_max=0.4, waiting_max=40, waiting_fraction=0.6), SUMMARY_DECODE, {}, "queueing"),
        # a short burst of waiting that did not hurt TTFT is not queueing
        (_view(waiting_max=30, waiting_fraction=0.1), SUMMARY_DECODE, {}, "compute-bound"),
        # ...but one that broke the TTFT limit is
        (
            _view(waiting_max=30, waiting_fraction=0.1),
            {**SUMMARY_DECODE, "ttft_ms": {"p50": 900, "p99": 3000}},
            {},
            "queueing",
        ),
        (_view(), SUMMARY_DECODE, {}, "compute-bound"),
        (_view(), None, {}, "compute-bound"),
        # no waiting, prefill dominates (short outputs, long TTFT), limits met: no one word
        (
            _view(),
            {
                "ttft_ms": {"p50": 800.0, "p99": 900.0},
                "tpot_ms": {"p50": 10.0},
                "itl_ms": {"p99": 20.0},
                "generated_tokens_total": 400,
                "completed": 100,
            },
            {},
            "",
        ),
        # ...unless ITL is broken
        (
            _view(),
            {
                "ttft_ms": {"p50": 800.0, "p99": 900.0},
                "tpot_ms": {"p50": 10.0},
                "itl_ms": {"p99": 80.0},
                "generated_tokens_total": 400,
                "completed": 100,
            },
            {},
            "compute-bound",
        ),
    ],
)
def test_bottleneck(
    view: dict[str, Any], summary: dict[str, Any] | None, kw: dict[str, Any], word: str
) -> None:
    assert bottleneck(view, summary, SLO, **kw) == word


def test_bottleneck_takes_the_dataclass() -> None:
    v = ServerSideView(samples=5, running_max=10, kv_cache_usage_max=0.99)
    assert bottleneck(v, None, None) == "kv-bound"
    assert bottleneck(ServerSideView(), None, None) == ""
