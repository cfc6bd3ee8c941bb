"""send_request against the fake SSE server with a scripted clock, and the SSE parser on its own.

The fake runs on the test's own event loop and sleeps between chunks, so every chunk reaches the client
in its own read; the chunks written back to back (the last token, usage, ``[DONE]``; chat's role chunk
and first token) arrive together. So the clock calls are exactly: one before sending, one per read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable

import aiohttp
import pytest

from tests.fakes.sse_server import FakeConfig, FakeServer, serve_fake
from tuner.load.client import SseParser, Target, request_body, send_request
from tuner.load.prompts import Prompt
from tuner.load.records import RequestRecord

PROMPT = Prompt(text="w1 w2 w3", messages=None, n_tokens=4)
CHAT = Prompt(text=None, messages=[{"role": "user", "content": "w1 w2 w3"}], n_tokens=9)
GAP = 0.01  # server sleep between chunks


class ScriptedClock:
    """Returns the scripted times one by one; a call past the end fails the test."""

    def __init__(self, times: Iterable[float]) -> None:
        self.times = list(times)
        self.calls = 0

    def __call__(self) -> float:
        if self.calls >= len(self.times):
            raise AssertionError(f"clock called more than the {len(self.times)} scripted times")
        self.calls += 1
        return self.times[self.calls - 1]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def send(
    session: aiohttp.ClientSession,
    srv: FakeServer,
    clock: ScriptedClock,
    *,
    max_tokens: int = 4,
    api: str = "completions",
    timeout_s: float = 10.0,
    prompt: Prompt = PROMPT,
) -> RequestRecord:
    target = Target(srv.url, "fake-model", api="chat" if api == "chat" else "completions")
    return await send_request(session, target, prompt, max_tokens, clock=clock, timeout_s=timeout_s)


async def test_completion_timestamps(session: aiohttp.ClientSession) -> None:
    clock = ScriptedClock([100.0, 100.5, 101.0, 101.25, 102.0])
    async with serve_fake(FakeConfig(first_token_delay_s=GAP, token_delay_s=GAP)) as srv:
        r = await send(session, srv, clock)
    assert r.error is None and r.ok
    assert r.send_time == 100.0
    assert r.first_token_time == 100.5
    assert r.token_times == [100.5, 101.0, 101.25, 102.0]
    assert r.chunk_tokens == [1, 1, 1, 1]
    assert r.end_time == 102.0  # the read with the last token also carried usage and [DONE]
    assert (r.prompt_tokens, r.output_tokens, r.expected_output_tokens) == (4, 4, 4)
    assert clock.calls == 5
    assert not r.warmup


async def test_chat_timestamps(session: aiohttp.ClientSession) -> None:
    clock = ScriptedClock([1.0, 2.0, 3.0, 4.0])
    async with serve_fake(FakeConfig(first_token_delay_s=GAP, token_delay_s=GAP)) as srv:
        r = await send(session, srv, clock, api="chat", max_tokens=3, prompt=CHAT)
        body = srv.stats.bodies[0]
    assert r.ok, r.error
    assert r.token_times == [2.0, 3.0, 4.0]  # the role chunk (no content) is not a token
    assert r.first_token_time == 2.0 and r.end_time == 4.0
    assert body["messages"] == CHAT.messages


async def test_request_body_and_headers(session: aiohttp.ClientSession) -> None:
    async with serve_fake() as srv:
        target = Target(srv.url + "/", "fake-model", headers={"Authorization": "Bearer k"})
        r = await send_request(session, target, PROMPT, 5, clock=ScriptedClock(range(20)), timeout_s=5)
        body, headers = srv.stats.bodies[0], srv.stats.headers[0]
    assert r.ok, r.error
    assert body["prompt"] == PROMPT.text and body["max_tokens"] == 5 and body["model"] == "fake-model"
    assert body["stream"] is True and body["ignore_eos"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert headers["Authorization"] == "Bearer k"


async def test_chunks_with_several_tokens(session: aiohttp.ClientSession) -> None:
    cfg = FakeConfig(tokens_per_chunk=3, token_delay_s=GAP)
    async with serve_fake(cfg) as srv:
        r = await send(session, srv, ScriptedClock(range(20)), max_tokens=8)
    assert r.ok and r.chunk_tokens == [1, 1, 1] and r.output_tokens == 8  # usage gives the total
    cfg = FakeConfig(tokens_per_chunk=3, token_delay_s=GAP, usage_every_chunk=True)
    async with serve_fake(cfg) as srv:
        r = await send(session, srv, ScriptedClock(range(20)), max_tokens=8)
    assert r.ok and r.chunk_tokens == [3, 3, 2] and r.output_tokens == 8  # usage deltas per chunk


async def test_http_error_is_recorded(session: aiohttp.ClientSession) -> None:
    clock = ScriptedClock([5.0, 6.0])
    async with serve_fake(FakeConfig(fail_fraction=1.0)) as srv:
        r = await send(session, srv, clock)
    assert r.error is not None and r.error.startswith("HTTP 500: ") and "injected failure" in r.error
    assert (r.send_time, r.end_time) == (5.0, 6.0)
    assert not r.ok and r.token_times == []


async def test_unknown_model_is_an_http_error(session: aiohttp.ClientSession) -> None:
    async with serve_fake(FakeConfig(model="other")) as srv:
        r = await send(session, srv, ScriptedClock(range(5)))
    assert r.error is not None and r.error.startswith("HTTP 404")


async def test_dropped_connection(session: aiohttp.ClientSession) -> None:
    async with serve_fake(FakeConfig(drop_fraction=1.0, token_delay_s=GAP)) as srv:
        r = await send(session, srv, ScriptedClock(range(30)), max_tokens=8)
    assert r.error is not None and not r.ok
    assert len(r.token_times) == 4  # half the stream arrived
    assert r.end_time is not None


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    async with serve_fake() as srv:
        url = srv.url
    clock = ScriptedClock([1.0, 2.0])
    r = await send_request(session, Target(url, "fake-model"), PROMPT, 4, clock=clock, timeout_s=5)
    assert r.error is not None and r.end_time == 2.0


async def test_timeout(session: aiohttp.ClientSession) -> None:
    async with serve_fake(FakeConfig(token_delay_s=5.0)) as srv:
        r = await send(session, srv, ScriptedClock(range(10)), timeout_s=0.2)
    assert r.error == "timeout after 0.2 s"
    assert len(r.token_times) == 1


async def test_stream_without_done(session: aiohttp.ClientSession) -> None:
    async with serve_fake(FakeConfig(send_done=False)) as srv:
        r = await send(session, srv, ScriptedClock(range(10)))
    assert r.error == "stream ended before [DONE]"
    assert r.output_tokens == 4


async def test_short_output(session: aiohttp.ClientSession) -> None:
    async with serve_fake(FakeConfig(eos_after=3, honor_ignore_eos=False)) as srv:
        r = await send(session, srv, ScriptedClock(range(10)), max_tokens=8)
    assert r.error == "short output: 3 of 8 tokens"
    assert r.end_time is not None and r.output_tokens == 3


async def test_prompt_without_text_for_completions(session: aiohttp.ClientSession) -> None:
    async with serve_fake() as srv:
        r = await send(session, srv, ScriptedClock([1.0]), prompt=CHAT)
        assert srv.stats.requests == 0
    assert r.error is not None and "text" in r.error and r.end_time == 1.0


async def test_text_prompt_on_chat_becomes_a_user_message() -> None:
    body = json.loads(request_body(Target("http://x", "m", api="chat"), PROMPT, 3))
    assert body["messages"] == [{"role": "user", "content": PROMPT.text}]


async def test_cancellation_propagates_and_keeps_partial_record(session: aiohttp.ClientSession) -> None:
    rec = RequestRecord(send_time=0.0)
    async with serve_fake(FakeConfig(token_delay_s=0.05)) as srv:
        task = asyncio.create_task(
            send_request(
                session,
                Target(srv.url, "fake-model"),
                PROMPT,
                100,
                clock=ScriptedClock(range(1000)),
                timeout_s=10,
                record=rec,
            )
        )
        while len(rec.token_times) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert rec.error is None and rec.end_time is None and len(rec.token_times) >= 2


# --- the parser alone -------------------------------------------------------------------------------


def completion_stream(texts: list[str], usage: tuple[int, int] | None = (7, 3), done: bool = True) -> bytes:
    out = b""
    for t in texts:
        chunk = {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": t}]}
        out += b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    if usage is not None:
        u = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "prompt_tokens_details": None}
        out += b"data: " + json.dumps({"choices": [], "usage": u}).encode() + b"\n\n"
    if done:
        out += b"data: [DONE]\n\n"
    return out


def parse(data: list[bytes], chat: bool = False, max_tokens: int = 3) -> RequestRecord:
    rec = RequestRecord(send_time=0.0)
    p = SseParser(rec, chat=chat)
    for i, d in enumerate(data):
        p.feed(d, float(i + 1))
    p.finish(max_tokens)
    return rec


def test_parser_any_split_gives_the_same_tokens() -> None:
    stream = completion_stream(["a", ' "quoted" ', "\\n"])
    whole = parse([stream])
    assert whole.ok and whole.token_times == [1.0, 1.0, 1.0] and whole.output_tokens == 3
    assert whole.prompt_tokens == 7 and whole.end_time == 1.0
    for cut in range(1, len(stream)):
        r = parse([stream[:cut], stream[cut:]])
        assert r.ok and len(r.token_times) == 3 and r.output_tokens == 3 and r.prompt_tokens == 7, cut


def test_parser_time_is_the_time_of_the_read() -> None:
    events = completion_stream(["a", "b", "c"]).split(b"\n\n")
    reads = [e + b"\n\n" for e in events if e]
    r = parse(reads)
    assert r.token_times == [1.0, 2.0, 3.0] and r.first_token_time == 1.0
    assert r.end_time == 5.0  # read 4 is usage, read 5 is [DONE]


def test_parser_ignores_empty_and_null_text_and_other_lines() -> None:
    data = (
        b": keep-alive\r\n\r\n"
        b"event: message\r\n"
        b'data: {"choices":[{"text":""}]}\r\n\r\n'
        b'data: {"choices":[{"text":null}]}\r\n\r\n'
        b'data:{"choices":[{"text":"x"}]}\r\n\r\n'
        b'data: {"choices": [{"text": "y"}]}\r\n\r\n'  # json.dumps spacing
        b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    r = parse([data], max_tokens=2)
    assert r.ok and len(r.token_times) == 2 and r.prompt_tokens == 2


def test_parser_chat_content_and_reasoning() -> None:
    data = (
        b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
        b'data: {"choices":[{"delta":{"reasoning_content":"think"}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":null},"finish_reason":"length"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    r = parse([data], chat=True, max_tokens=2)
    assert r.ok and r.chunk_tokens == [1, 1] and r.output_tokens == 2  # no usage: count chunks
    assert parse([data], chat=False, max_tokens=2).token_times == []  # completions look at "text"


def test_parser_continuous_usage_deltas() -> None:
    def ev(text: str, n: int) -> bytes:
        return b'data: {"choices":[{"text":"%s"}],"usage":{"prompt_tokens":5,"completion_tokens":%d}}\n\n' % (
            text.encode(),
            n,
        )

    r = parse([ev("ab", 2) + ev("", 3) + ev("cd", 5) + ev("e", 6) + b"data: [DONE]\n\n"], max_tokens=6)
    assert r.ok and r.chunk_tokens == [2, 3, 1] and r.output_tokens == 6


def test_parser_error_event() -> None:
    data = (
        completion_stream(["a"], usage=None, done=False)
        + b'data: {"error": {"message": "engine dead", "code": 500}}\n\n'
        + b"data: [DONE]\n\n"
    )
    r = parse([data])
    assert r.error is not None and r.error.startswith("stream error: ") and "engine dead" in r.error


def test_parser_finish_errors() -> None:
    assert parse([completion_stream(["a", "b", "c"], done=False)]).error == "stream ended before [DONE]"
    short = parse([completion_stream(["a"], usage=(1, 1))])
    assert short.error == "short output: 1 of 3 tokens" and short.end_time == 1.0


async def test_session_total_timeout_does_not_cut_streams() -> None:
    """Only ``timeout_s`` bounds a request: a session's total (aiohttp's default is 5 min) does not."""
    async with (
        serve_fake(FakeConfig(token_delay_s=0.05)) as srv,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.05)) as short,
    ):
        r = await send(short, srv, ScriptedClock(range(20)), max_tokens=5)
    assert r.ok, r.error


def test_parser_collects_the_reply_text_only_when_asked() -> None:
    stream = completion_stream(["a", ' "quoted" ', "\\n"])
    reply: list[str] = []
    p = SseParser(RequestRecord(send_time=0.0), reply=reply)
    for k in range(0, len(stream), 7):  # split anywhere
        p.feed(stream[k : k + 7], 1.0)
    assert "".join(reply) == 'a "quoted" \\n'
    chat = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},  # a token, not re-sent
        {"choices": [{"index": 0, "delta": {"content": "Hi é"}}]},
    ]
    reply = []
    p = SseParser(RequestRecord(send_time=0.0), chat=True, reply=reply)
    p.feed(b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chat), 1.0)
    assert reply == ["", "Hi é"] and p.record.chunk_tokens == [1, 1]
