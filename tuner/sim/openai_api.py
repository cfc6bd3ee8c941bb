"""The OpenAI-compatible response shapes the simulator answers with (vLLM's, field for field).

:func:`max_tokens` checks a request's token budget as vLLM does; :class:`Reply` writes one request's answer
from its :class:`TokenStream`: server-sent events (``data: {json}\\n\\n`` chunks — completions carry
``choices[0].text``, chat ``choices[0].delta.content``, the first chat chunk ``delta.role`` — the last
content chunk ``finish_reason``, then a usage chunk when asked for, then ``data: [DONE]``) or one JSON body.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class TokenStream:
    """What the engine loop hands a request's writer: ``(tokens, done)`` per step, and why it ends."""

    queue: asyncio.Queue[tuple[int, bool]]
    finish_reason: str = "length"


def error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    """vLLM's error body."""
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}}, status=status
    )


def max_tokens(body: dict[str, Any], n_prompt: int, limit: int, chat: bool) -> int | web.Response:
    """The request's output budget (``max_completion_tokens`` for chat, else ``max_tokens``, else what the
    context leaves), or vLLM's 400 answer when it is not an integer >= 1, the prompt is empty or prompt and
    output exceed ``limit`` (max-model-len)."""
    mt = body.get("max_completion_tokens") if chat else None
    raw = mt if mt is not None else body.get("max_tokens")
    if raw is None:
        raw = limit - n_prompt
    try:
        n = int(raw)
    except (TypeError, ValueError):
        return error(400, "max_tokens must be an integer")
    if n < 1:
        return error(400, f"max_tokens must be at least 1, got {n}.")
    if n_prompt + n > limit:
        return error(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{n_prompt + n} tokens ({n_prompt} in the messages, {n} in the completion). "
            "Please reduce the length of the messages or completion.",
        )
    if not n_prompt:
        return error(400, "The prompt is empty.")
    return n


def wants_usage(body: dict[str, Any]) -> bool:
    """``stream_options.include_usage``."""
    opts = body.get("stream_options") or {}
    return bool(opts.get("include_usage", False)) if isinstance(opts, dict) else False


@dataclass
class Reply:
    """One request's answer: a completion or a chat completion for ``model``."""

    chat: bool
    model: str
    n_prompt: int
    headers: dict[str, str]
    rid: str = field(init=False)

    def __post_init__(self) -> None:
        self.rid = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    def _usage(self, produced: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.n_prompt,
            "total_tokens": self.n_prompt + produced,
            "completion_tokens": produced,
        }

    def _body(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.rid,
            "object": obj,
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def _choice(self, text: str, reason: str | None, key: str) -> dict[str, Any]:
        if self.chat:
            content = {"content": text} if key == "delta" else {"role": "assistant", "content": text}
            return {"index": 0, key: content, "logprobs": None, "finish_reason": reason}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason, "stop_reason": None}

    async def stream(
        self, request: web.Request, st: TokenStream, sample_text: Callable[[int], str], usage: bool
    ) -> web.StreamResponse:
        """Server-sent events, one chunk per engine step that produced tokens."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **self.headers},
        )

        async def send(body: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(body).encode() + b"\n\n")

        await resp.prepare(request)
        if self.chat:
            first = {"role": "assistant", "content": ""}
            await send(
                self._body(obj, [{"index": 0, "delta": first, "logprobs": None, "finish_reason": None}])
            )
        produced = 0
        done = False
        while not done:
            n, done = await st.queue.get()
            produced += n
            reason = st.finish_reason if done else None
            await send(self._body(obj, [self._choice(sample_text(n), reason, "delta")]))
        if usage:
            await send(self._body(obj, [], usage=self._usage(produced)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def collect(self, st: TokenStream, sample_text: Callable[[int], str]) -> web.Response:
        """One JSON body once the request has finished."""
        produced = 0
        done = False
        while not done:
            n, done = await st.queue.get()
            produced += n
        choice = self._choice(sample_text(produced), st.finish_reason, "message")
        obj = "chat.completion" if self.chat else "text_completion"
        return web.json_response(self._body(obj, [choice], usage=self._usage(produced)), headers=self.headers)
