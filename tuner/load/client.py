"""One streaming request to an OpenAI-compatible server (vLLM), timed with an injected clock.

Contract of :func:`send_request`:

* it POSTs ``/v1/completions`` (or ``/v1/chat/completions``) with ``stream=true``, ``max_tokens``,
  ``ignore_eos=true`` (a vLLM extension), ``temperature=0`` and ``stream_options.include_usage``;
* it returns a :class:`~tuner.load.records.RequestRecord` and never raises for a failed request: HTTP
  errors, connection errors, a timeout, an ``error`` event, a stream that ends without ``[DONE]`` and a
  short output are all recorded in ``record.error``. Only :class:`asyncio.CancelledError` propagates;
* the clock is called once just before the request is sent (``send_time``), once per network read (every
  SSE event in that read gets that time: it is when the client saw it), and once more only when the
  request fails (``end_time`` of a failure). ``end_time`` of a success is the time of the read that
  carried ``[DONE]``;
* ``timeout_s`` bounds the whole request; of the session's own timeouts only the connect ones apply
  (a session's ``total``, 5 minutes by default in aiohttp, would cut long generations short).

The per-event work is a few ``bytes.find`` calls: no JSON is parsed except the integers of a ``usage``
object, so one core keeps up with tens of thousands of streamed tokens per second. Only when the caller
asks for the reply text (``reply``: a conversation with a later turn, which re-sends it) is each output
event's JSON parsed for its ``text`` (completions) or ``delta.content`` (chat).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from tuner.load.prompts import Prompt
from tuner.load.records import RequestRecord

Clock = Callable[[], float]

_ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class Target:
    """Where requests go. ``headers`` are added to every request (e.g. ``Authorization``)."""

    base_url: str
    model: str
    api: Literal["completions", "chat"] = "completions"
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        return self.base_url.rstrip("/") + path


def request_body(target: Target, prompt: Prompt, max_tokens: int) -> bytes:
    """The JSON body for ``prompt``. Raises ``ValueError`` when the prompt lacks what the API needs."""
    body: dict[str, Any] = {
        "model": target.model,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "temperature": 0.0,
    }
    if target.api == "chat":
        if prompt.messages is not None:
            body["messages"] = prompt.messages
        elif prompt.text is not None:
            body["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            raise ValueError("prompt has neither messages nor text")
    else:
        if prompt.text is None:
            raise ValueError("the completions API needs a prompt with text (this one has only messages)")
        body["prompt"] = prompt.text
    return json.dumps(body).encode()


async def send_request(
    session: aiohttp.ClientSession,
    target: Target,
    prompt: Prompt,
    max_tokens: int,
    *,
    clock: Clock,
    timeout_s: float,
    warmup: bool = False,
    record: RequestRecord | None = None,
    reply: list[str] | None = None,
) -> RequestRecord:
    """Stream one request and return its record (see the module docstring for the contract).

    ``record``, when given, is filled in place (its ``send_time`` is overwritten) and returned: a caller
    that cancels the request keeps whatever timestamps it had collected. ``reply``, when given, gets the
    streamed output text piece by piece (its ``"".join`` is the reply).
    """
    rec = record if record is not None else RequestRecord(send_time=0.0)
    rec.warmup = warmup
    rec.expected_output_tokens = max_tokens
    try:
        body = request_body(target, prompt, max_tokens)
    except ValueError as e:
        rec.send_time = rec.end_time = clock()
        rec.error = str(e)
        return rec
    headers = {"Content-Type": "application/json", **target.headers}
    parser = SseParser(rec, chat=target.api == "chat", reply=reply)
    rec.send_time = clock()
    failure: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            await _exchange(session, target.url, body, headers, parser, clock)
    except aiohttp.ClientError as e:  # its timeouts too (the session's sock_connect)
        failure = _describe(e)
    except TimeoutError:
        failure = f"timeout after {timeout_s:g} s"
    except Exception as e:  # a failed request is a record, never an exception
        failure = _describe(e)
    if failure is not None and not parser.done:  # after [DONE] the answer is whole: ignore the rest
        rec.error = rec.error or failure
    parser.finish(max_tokens)
    if rec.error is not None and rec.end_time is None:
        rec.end_time = clock()
    return rec


async def _exchange(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    parser: SseParser,
    clock: Clock,
) -> None:
    async with session.post(url, data=body, headers=headers, timeout=_timeouts(session)) as resp:
        if not 200 <= resp.status < 300:
            text = (await resp.read()).decode("utf-8", "replace")
            parser.record.error = f"HTTP {resp.status}: {text[:_ERROR_BODY_CHARS]}"
            return
        read = resp.content.readany
        feed = parser.feed
        while data := await read():
            feed(data, clock())


def _timeouts(session: aiohttp.ClientSession) -> aiohttp.ClientTimeout:
    """The session's connect timeouts, without its total or read limits: ``timeout_s`` bounds a request.

    (aiohttp's default session has a 5 minute total, which would cut long generations short.)
    """
    t = session.timeout
    return aiohttp.ClientTimeout(total=None, connect=t.connect, sock_connect=t.sock_connect)


_USAGE_RE = re.compile(rb'"(prompt_tokens|completion_tokens)":\s*(\d+)')


def _has_text(payload: bytes, key: bytes) -> bool:
    """True when ``payload`` has ``key`` followed by a non-empty JSON string.

    Inside a JSON string every ``"`` is escaped, so ``key`` (which ends with ``":``) can only match a real
    key; this needs no JSON parsing.
    """
    i = payload.find(key)
    if i < 0:
        return False
    i += len(key)
    n = len(payload)
    while i < n and payload[i] == 0x20:  # json.dumps writes '": "'
        i += 1
    return i + 1 < n and payload[i] == 0x22 and payload[i + 1] != 0x22


class SseParser:
    """Incremental parser of an OpenAI streaming response that fills a :class:`RequestRecord`.

    :meth:`feed` takes the bytes of one network read (lines may be split anywhere between reads) and
    the time of that read. Events that carry output text (``text`` for completions; ``content``,
    ``reasoning_content`` or ``reasoning`` for chat) are output chunks; each counts one token, or the
    increase of ``usage.completion_tokens`` when the server sends usage with every chunk. With ``reply``,
    each output event's text (``text``, or ``delta.content``: what a chat client re-sends) is appended.
    """

    __slots__ = ("_buf", "_chat", "_done_time", "_last_completion", "_reply", "record")

    def __init__(self, record: RequestRecord, *, chat: bool = False, reply: list[str] | None = None) -> None:
        self.record = record
        self._chat = chat
        self._reply = reply
        self._buf = b""
        self._done_time: float | None = None
        self._last_completion = 0

    @property
    def done(self) -> bool:
        """Whether ``[DONE]`` was seen."""
        return self._done_time is not None

    def feed(self, data: bytes, now: float) -> None:
        if self._buf:
            data = self._buf + data
        lines = data.split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            if line[:5] != b"data:":
                continue  # blank separators, comments, "event:"/"id:" fields
            payload = line[5:].strip()
            if payload[:1] == b"{":
                self._event(payload, now)
            elif payload == b"[DONE]":
                self._done_time = now

    def _event(self, payload: bytes, now: float) -> None:
        rec = self.record
        if self._chat:
            has_text = (
                _has_text(payload, b'"content":')
                or _has_text(payload, b'"reasoning_content":')
                or _has_text(payload, b'"reasoning":')
            )
        else:
            i = payload.find(b'"text":"')  # the compact form vLLM writes: one find, one byte compare
            has_text = payload[i + 8] != 0x22 if 0 <= i < len(payload) - 8 else _has_text(payload, b'"text":')
        tokens = 1
        if b'"completion_tokens"' in payload:
            tokens = self._usage(payload, has_text)
        if has_text:
            if rec.first_token_time is None:
                rec.first_token_time = now
            rec.token_times.append(now)
            rec.chunk_tokens.append(tokens)
            if self._reply is not None:
                self._reply.append(_text_of(payload, self._chat))
        elif payload.startswith(b'{"error"') and rec.error is None:
            rec.error = "stream error: " + payload[: _ERROR_BODY_CHARS + 20].decode("utf-8", "replace")

    def _usage(self, payload: bytes, has_text: bool) -> int:
        """Record a usage object; return the tokens a text chunk carried (1 when unknown)."""
        rec = self.record
        tokens = 1
        for name, value in _USAGE_RE.findall(payload):
            n = int(value)
            if name == b"prompt_tokens":
                rec.prompt_tokens = n
            else:
                rec.output_tokens = n
                if has_text:
                    delta = n - self._last_completion
                    tokens = delta if delta > 0 else 1
                    self._last_completion = n
        return tokens

    def finish(self, max_tokens: int) -> None:
        """Close the record after the exchange: ``end_time``, output count, and stream-level errors."""
        rec = self.record
        if rec.output_tokens is None and rec.chunk_tokens:
            rec.output_tokens = sum(rec.chunk_tokens)
        if rec.error is not None:
            return
        if self._done_time is None:
            rec.error = "stream ended before [DONE]"
            return
        rec.end_time = self._done_time
        got = rec.output_tokens or 0
        if got < max_tokens:
            rec.error = f"short output: {got} of {max_tokens} tokens"


def _text_of(payload: bytes, chat: bool) -> str:
    """The output text of one streamed event (``""`` when it has none or is not valid JSON)."""
    try:
        choices = json.loads(payload).get("choices") or []
    except ValueError:
        return ""
    if not choices:
        return ""
    piece = (choices[0].get("delta") or {}).get("content") if chat else choices[0].get("text")
    return piece if isinstance(piece, str) else ""


def _describe(e: BaseException) -> str:
    text = str(e)
    name = type(e).__name__
    return f"{name}: {text}"[:300] if text else name
