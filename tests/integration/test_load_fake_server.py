"""offer_load against the fake SSE server: counts, durations, warm-up, concurrency, rates, failures, stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.fakes.sse_server import FakeConfig, serve_fake
from tuner.load.arrivals import Arrivals
from tuner.load.client import Target
from tuner.load.conversation import Conversation, Turn
from tuner.load.prompts import Prompt
from tuner.load.records import RequestRecord
from tuner.load.runner import LoadPlan, offer_load
from tuner.measure.metrics import summarize

PROMPTS = [Prompt(text=f"prompt number {i}", messages=None, n_tokens=4) for i in range(64)]
MODEL = "fake-model"


def convs(prompts: list[Prompt], output_tokens: int) -> list[Conversation]:
    """One-turn conversations: today's requests."""
    return [Conversation((Turn(p, output_tokens),)) for p in prompts]


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, int, int | None]] = []

    def request_done(self, record: RequestRecord, done: int, total: int | None) -> None:
        self.calls.append((record.warmup, done, total))


async def test_count_warmup_and_concurrency() -> None:
    obs = Observer()
    plan = LoadPlan(concurrency=4, requests=20, warmup_requests=3)
    async with serve_fake(FakeConfig(token_delay_s=0.002)) as srv:
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 6), plan, observer=obs)
        stats = srv.stats
    assert len(records) == 23 and stats.requests == 23
    assert [r.warmup for r in records] == [True] * 3 + [False] * 20
    assert all(r.ok for r in records), [r.error for r in records if not r.ok]
    assert stats.max_in_flight == 4  # the bound is reached and respected
    warm_end = max(r.end_time or 0 for r in records[:3])
    assert warm_end <= min(r.send_time for r in records[3:])  # warm-up is awaited first
    sent = sorted(b["prompt"] for b in stats.bodies)
    assert sent == sorted(p.text or "" for p in PROMPTS[:23])  # round-robin from the start, no repeats
    s = summarize(records)
    assert (s.completed, s.failed, s.generated_tokens_total) == (20, 0, 120)
    assert obs.calls[:3] == [(True, 1, 3), (True, 2, 3), (True, 3, 3)]
    assert obs.calls[3:] == [(False, i, 20) for i in range(1, 21)]


async def test_prompts_are_reused_round_robin() -> None:
    plan = LoadPlan(concurrency=1, requests=5)
    async with serve_fake() as srv:
        await offer_load(Target(srv.url, MODEL), convs(PROMPTS[:2], 2), plan)
        assert [b["prompt"] for b in srv.stats.bodies] == [PROMPTS[i % 2].text for i in range(5)]


async def test_duration_closed_loop() -> None:
    plan = LoadPlan(concurrency=3, duration_s=0.4)
    async with serve_fake(FakeConfig(token_delay_s=0.01)) as srv:
        t0 = time.perf_counter()
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 5), plan)
        wall = time.perf_counter() - t0
    sends = [r.send_time for r in records]
    assert max(sends) - min(sends) < 0.4  # nothing is sent after the duration ...
    assert all(r.ok for r in records)  # ... and what was in flight is awaited
    assert 0.4 <= wall < 1.5
    assert 6 <= len(records) <= 40  # ~3 x 0.4 s / ~0.05 s per request


async def test_poisson_rate_open_loop() -> None:
    rate, n = 200.0, 120
    plan = LoadPlan(arrivals=Arrivals(rate=rate), requests=n, seed=3)
    async with serve_fake() as srv:
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 2), plan)
    sends = np.sort([r.send_time for r in records])
    assert len(records) == n and all(r.ok for r in records)
    achieved = (n - 1) / (sends[-1] - sends[0])
    assert achieved == pytest.approx(rate, rel=0.3)
    assert np.diff(sends).std() > 0.3 / rate  # exponential gaps, not a metronome


async def test_rate_with_concurrency_cap() -> None:
    plan = LoadPlan(arrivals=Arrivals(rate=1000.0), concurrency=3, requests=15)
    async with serve_fake(FakeConfig(token_delay_s=0.01)) as srv:
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 4), plan)
        assert srv.stats.max_in_flight == 3
    assert len(records) == 15 and all(r.ok for r in records)


async def test_rate_with_duration() -> None:
    plan = LoadPlan(arrivals=Arrivals(rate=100.0), duration_s=0.3, warmup_requests=2)
    async with serve_fake() as srv:
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 2), plan)
        assert srv.stats.max_in_flight >= 1
    measured = [r for r in records if not r.warmup]
    assert [r.warmup for r in records[:2]] == [True, True]
    assert 10 <= len(measured) <= 60
    assert max(r.send_time for r in measured) - min(r.send_time for r in measured) < 0.3


async def test_failures_are_records() -> None:
    cfg = FakeConfig(fail_fraction=0.3, drop_fraction=0.3, token_delay_s=0.001, seed=1)
    plan = LoadPlan(concurrency=4, requests=40)
    async with serve_fake(cfg) as srv:
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 8), plan)
        stats = srv.stats
    http500 = [r for r in records if r.error and r.error.startswith("HTTP 500")]
    broken = [r for r in records if r.error and not r.error.startswith("HTTP 500")]
    assert len(records) == 40
    assert len(http500) == stats.failed_500 > 0
    assert len(broken) == stats.dropped > 0
    s = summarize(records)
    assert s.failed == stats.failed_500 + stats.dropped and s.completed == stats.completed


async def test_timeouts_are_records() -> None:
    plan = LoadPlan(concurrency=2, requests=2, request_timeout_s=0.15)
    async with serve_fake(FakeConfig(token_delay_s=0.05)) as srv:
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 50), plan)
    assert [r.error for r in records] == ["timeout after 0.15 s"] * 2


async def test_stop_cancels_in_flight() -> None:
    stop = asyncio.Event()
    plan = LoadPlan(concurrency=3, requests=10)
    async with serve_fake(FakeConfig(token_delay_s=0.01)) as srv:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, stop.set)
        t0 = time.perf_counter()
        records = await offer_load(Target(srv.url, MODEL), convs(PROMPTS, 1000), plan, stop=stop)
        assert time.perf_counter() - t0 < 2.0
        for _ in range(100):  # the server notices the disconnects
            if srv.stats.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert srv.stats.in_flight == 0
    assert len(records) == 3
    assert [r.error for r in records] == ["cancelled"] * 3
    assert all(r.token_times and r.end_time is None for r in records)  # partial timestamps kept


async def test_stop_already_set() -> None:
    stop = asyncio.Event()
    stop.set()
    async with serve_fake() as srv:
        records = await offer_load(
            Target(srv.url, MODEL), convs(PROMPTS, 1), LoadPlan(concurrency=2, requests=5), stop=stop
        )
    assert all(r.error == "cancelled" for r in records)


async def test_cancelling_offer_load_propagates() -> None:
    plan = LoadPlan(concurrency=2, requests=4)
    async with serve_fake(FakeConfig(token_delay_s=0.01)) as srv:
        task = asyncio.create_task(offer_load(Target(srv.url, MODEL), convs(PROMPTS, 1000), plan))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_chat_api_and_caller_session() -> None:
    prompts = [
        Prompt(text=None, messages=[{"role": "user", "content": f"hi {i}"}], n_tokens=3) for i in range(4)
    ]
    plan = LoadPlan(concurrency=2, requests=4)
    async with serve_fake() as srv, aiohttp.ClientSession() as session:
        records = await offer_load(
            Target(srv.url, MODEL, api="chat"), convs(prompts, 3), plan, session=session
        )
        assert not session.closed  # a session the caller passed stays open
        assert all("messages" in b for b in srv.stats.bodies)
    assert all(r.ok and r.output_tokens == 3 for r in records)


def test_plan_validation() -> None:
    bad: dict[str, Any]
    for bad in (
        dict(requests=3),  # no concurrency or arrivals
        dict(concurrency=2),  # no requests or duration
        dict(concurrency=0, requests=3),
        dict(concurrency=1, duration_s=-1.0),
        dict(concurrency=1, requests=3, warmup_requests=-1),
    ):
        with pytest.raises(ValueError):
            LoadPlan(**bad)


async def test_no_prompts() -> None:
    with pytest.raises(ValueError):
        await offer_load(Target("http://127.0.0.1:1", MODEL), [], LoadPlan(concurrency=1, requests=1))


async def test_observer_errors_propagate() -> None:
    class Broken:
        def request_done(self, record: RequestRecord, done: int, total: int | None) -> None:
            raise RuntimeError("progress bar bug")

    async with serve_fake() as srv:
        with pytest.raises(RuntimeError, match="progress bar bug"):
            await offer_load(
                Target(srv.url, MODEL),
                convs(PROMPTS, 2),
                LoadPlan(concurrency=2, requests=4),
                observer=Broken(),
            )
