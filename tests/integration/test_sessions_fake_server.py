"""Sessions and arrival processes on the wire, against the fake SSE server: history re-sent in order with
the server's own replies, think time, request counts in turns, per-turn metrics, trace replay."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.fakes.sse_server import FakeConfig, serve_fake
from tuner.load.arrivals import Arrivals
from tuner.load.client import Target
from tuner.load.conversation import Conversation, Turn
from tuner.load.prompts import Prompt
from tuner.load.runner import LoadPlan, conversations_used, offer_load
from tuner.measure.metrics import summarize

MODEL = "fake-model"


def text(s: str) -> Prompt:
    return Prompt(text=s, messages=None, n_tokens=len(s.split()) + 1)


def user(s: str) -> Prompt:
    return Prompt(text=None, messages=[{"role": "user", "content": s}], n_tokens=len(s.split()) + 4)


def session(i: int, turns: int, make: type | object = text, think_s: float = 0.0) -> Conversation:
    assert callable(make)
    return Conversation(
        tuple(
            Turn(make(f"c{i} t{t}"), output_tokens=t + 2, think_s=think_s if t else 0.0) for t in range(turns)
        )
    )


async def test_chat_sessions_resend_their_history_in_order() -> None:
    convs = [session(i, 3, user) for i in range(2)]
    async with serve_fake() as srv:
        records = await offer_load(
            Target(srv.url, MODEL, api="chat"), convs, LoadPlan(concurrency=1, requests=6)
        )
        bodies = srv.stats.bodies
    assert all(r.ok for r in records)
    assert [(r.conversation, r.turn) for r in records] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    reply = {2: " tok tok", 3: " tok tok tok"}  # the fake streams " tok" per token: the server's own text
    assert bodies[0]["messages"] == [{"role": "user", "content": "c0 t0"}]
    assert bodies[1]["messages"] == [
        {"role": "user", "content": "c0 t0"},
        {"role": "assistant", "content": reply[2]},
        {"role": "user", "content": "c0 t1"},
    ]
    assert bodies[2]["messages"] == [
        *bodies[1]["messages"],
        {"role": "assistant", "content": reply[3]},
        {"role": "user", "content": "c0 t2"},
    ]
    assert bodies[3]["messages"] == [{"role": "user", "content": "c1 t0"}]  # a new conversation starts afresh
    assert [b["max_tokens"] for b in bodies[:3]] == [2, 3, 4]  # each turn its own output length


async def test_completions_sessions_send_the_concatenated_text() -> None:
    async with serve_fake() as srv:
        await offer_load(Target(srv.url, MODEL), [session(0, 3)], LoadPlan(concurrency=1, requests=3))
        prompts = [b["prompt"] for b in srv.stats.bodies]
    assert prompts == ["c0 t0", "c0 t0 tok tokc0 t1", "c0 t0 tok tokc0 t1 tok tok tokc0 t2"]


async def test_think_time_is_kept_between_a_reply_and_the_next_turn() -> None:
    loop = asyncio.get_running_loop()
    async with serve_fake(FakeConfig(token_delay_s=0.005)) as srv:
        records = await offer_load(
            Target(srv.url, MODEL),
            [session(i, 2, think_s=0.15) for i in range(3)],
            LoadPlan(concurrency=3, requests=6),
            clock=loop.time,  # records stamped on the loop's clock, which paces the think time
        )
    by = {(r.conversation, r.turn): r for r in records}
    for c in range(3):
        first, second = by[(c, 0)], by[(c, 1)]
        assert first.end_time is not None
        assert second.send_time - first.end_time >= 0.15 - 1e-3
    assert summarize(records).completed == 6


async def test_the_request_count_counts_turns_and_ends_a_conversation_early() -> None:
    async with serve_fake() as srv:
        records = await offer_load(
            Target(srv.url, MODEL), [session(i, 3) for i in range(5)], LoadPlan(concurrency=2, requests=7)
        )
    assert len(records) == 7 and conversations_used(records) == 3
    assert sorted((r.conversation, r.turn) for r in records) == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)
    ]  # fmt: skip


async def test_a_failed_turn_ends_its_conversation() -> None:
    async with serve_fake(FakeConfig(fail_fraction=1.0)) as srv:
        records = await offer_load(
            Target(srv.url, MODEL), [session(i, 3) for i in range(4)], LoadPlan(concurrency=1, requests=6)
        )
    assert [r.turn for r in records] == [
        0,
        0,
    ]  # two conversations of 3 turns reserved the 6, each failed first
    assert all(r.error and r.error.startswith("HTTP 500") for r in records)


async def test_per_turn_metrics_of_a_session_load() -> None:
    async with serve_fake(FakeConfig(first_token_delay_s=0.002)) as srv:
        records = await offer_load(
            Target(srv.url, MODEL), [session(i, 2) for i in range(8)], LoadPlan(concurrency=4, requests=16)
        )
    s = summarize(records)
    assert s.completed == 16
    assert list(s.turns) == ["1", "2", "later"]
    assert s.turns["1"]["count"] == 8 and s.turns["later"]["count"] == 8
    assert s.turns["1"]["ttft_ms"]["p50"] is not None and s.turns["2"]["itl_ms"]["p50"] is not None
    assert s.input_tokens.count == 16  # as the server counted: later turns carry the history
    assert s.input_tokens.p99 > s.input_tokens.p50 >= 3


async def test_open_loop_sessions_start_conversations_at_the_rate() -> None:
    rate = 100.0
    async with serve_fake() as srv:
        records = await offer_load(
            Target(srv.url, MODEL),
            [session(i, 2) for i in range(40)],
            LoadPlan(arrivals=Arrivals("constant", rate=rate), requests=40),
        )
    firsts = np.sort([r.send_time for r in records if r.turn == 0])
    assert len(records) == 40 and len(firsts) == 20
    assert np.diff(firsts).mean() == pytest.approx(1 / rate, rel=0.2)


async def test_trace_replay_with_a_scale() -> None:
    at = [0.0, 0.1, 0.1, 0.3, 0.5]
    convs = [Conversation((Turn(text(f"r{i}"), 2),), at_s=t) for i, t in enumerate(at)]
    loop = asyncio.get_running_loop()
    async with serve_fake() as srv:
        records = await offer_load(
            Target(srv.url, MODEL),
            convs,
            LoadPlan(arrivals=Arrivals("trace", scale=2.0), requests=5),
            clock=loop.time,
        )
    late = np.array([r.send_time for r in records]) - records[0].send_time - np.array(at) / 2.0
    assert late.min() >= -2e-3  # never early (the loop's sleep) ...
    assert late[-1] < 0.1  # ... and the replay took about half the trace's 0.5 s (a busy machine adds lag)


async def test_one_turn_conversations_send_today_s_requests() -> None:
    convs = [Conversation((Turn(text(f"p{i}"), 3),)) for i in range(6)]
    async with serve_fake() as srv:
        records = await offer_load(Target(srv.url, MODEL), convs, LoadPlan(concurrency=2, requests=6))
        prompts = sorted(b["prompt"] for b in srv.stats.bodies)
    assert prompts == sorted(f"p{i}" for i in range(6))
    assert [r.conversation for r in records] == list(range(6)) and {r.turn for r in records} == {0}
    assert summarize(records).turns == {}
