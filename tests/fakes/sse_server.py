"""A fake of vLLM's OpenAI streaming endpoints, for the load generator's tests and benchmark.

Endpoints: ``POST /v1/completions`` and ``/v1/chat/completions`` (streamed like vLLM: one SSE event per
chunk, a final usage event when ``stream_options.include_usage`` is set, then ``data: [DONE]``; usage in
every chunk with ``continuous_usage_stats``), ``GET /health``, ``GET /v1/models``, ``POST /tokenize`` and
``GET /stats`` (what :class:`FakeStats` holds, as JSON). A request header ``X-Fake-Token-Delay: <seconds>``
overrides the configured delay between chunks for that request.

Behaviour is set by :class:`FakeConfig`: delays, tokens per chunk, injected failures (HTTP 500, a
connection dropped mid-stream, a stream without ``[DONE]``, a server that stops at EOS unless it honours
``ignore_eos``). The server counts requests and the most it ever had in flight.

Use it in tests as ``async with serve_fake(FakeConfig(...)) as srv: ... srv.url ...``, or as a separate
process: ``python -m tests.fakes.sse_server --port 0`` prints ``PORT <n>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeConfig:
    model: str = "fake-model"
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0  # between chunks; 0 still yields to the loop so streams interleave
    tokens_per_chunk: int = 1
    fail_fraction: float = 0.0  # answer HTTP 500 to this fraction of requests
    drop_fraction: float = 0.0  # close the connection halfway through this fraction of streams
    eos_after: int | None = None  # stop after this many tokens when the request lacks ignore_eos
    honor_ignore_eos: bool = True
    send_done: bool = True  # False: end streams without "data: [DONE]"
    usage_every_chunk: bool = False  # as if the request asked for continuous_usage_stats
    record_emits: bool = False  # keep each chunk's emit time (perf_counter) per prompt, for the bench
    seed: int = 0
    prompt_tokens: Callable[[str], int] | None = None  # default: whitespace words + 1 (a BOS)


@dataclass
class FakeStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    failed_500: int = 0
    dropped: int = 0
    completed: int = 0
    client_gone: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    emits: dict[str, list[float]] = field(default_factory=dict)  # prompt text -> chunk emit times


@dataclass
class FakeServer:
    url: str
    config: FakeConfig
    stats: FakeStats


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    p = body.get("prompt", "")
    return p if isinstance(p, str) else json.dumps(p)


class _Handler:
    def __init__(self, config: FakeConfig, stats: FakeStats) -> None:
        self.cfg = config
        self.stats = stats
        self.rng = random.Random(config.seed)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.cfg.model, "object": "model"}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        n = self._count(_prompt_text(await request.json()))
        return web.json_response({"count": n, "tokens": list(range(n)), "max_model_len": 1 << 20})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    def _count(self, text: str) -> int:
        if self.cfg.prompt_tokens is not None:
            return self.cfg.prompt_tokens(text)
        return len(text.split()) + 1

    async def generate(self, request: web.Request) -> web.StreamResponse:
        st = self.stats
        st.requests += 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            return await self._generate(request)
        finally:
            st.in_flight -= 1

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        cfg, st = self.cfg, self.stats
        body = await request.json()
        st.bodies.append(body)
        st.headers.append(dict(request.headers))
        if body.get("model") != cfg.model:
            msg = f"model {body.get('model')!r} not found"
            return web.json_response({"error": {"message": msg}}, status=404)
        if cfg.fail_fraction and self.rng.random() < cfg.fail_fraction:
            st.failed_500 += 1
            return web.json_response({"error": {"message": "injected failure", "code": 500}}, status=500)
        chat = request.path.endswith("/chat/completions")
        text = _prompt_text(body)
        asked = int(body.get("max_tokens") or 16)
        n_out = asked
        if cfg.eos_after is not None and not (body.get("ignore_eos") and cfg.honor_ignore_eos):
            n_out = min(n_out, cfg.eos_after)
        if not body.get("stream"):
            return web.json_response(_whole(chat, cfg.model, self._count(text), n_out))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            await self._stream(request, resp, body, text, n_out, asked, chat)
        except ConnectionError:  # the client went away mid-write
            st.client_gone += 1
        except asyncio.CancelledError:  # ... or while the handler slept (handler_cancellation)
            st.client_gone += 1
            raise
        return resp

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        body: dict[str, Any],
        text: str,
        n_out: int,
        asked: int,
        chat: bool,
    ) -> None:
        cfg, st = self.cfg, self.stats
        opts = body.get("stream_options") or {}
        usage_each = cfg.usage_every_chunk or bool(opts.get("continuous_usage_stats"))
        drop = bool(cfg.drop_fraction) and self.rng.random() < cfg.drop_fraction
        n_prompt = self._count(text)
        emits: list[float] | None = st.emits.setdefault(text, []) if cfg.record_emits else None
        kind = "chat.completion.chunk" if chat else "text_completion"
        head = f'{{"id":"cmpl-{st.requests}","object":"{kind}","created":0,"model":"{cfg.model}","choices":['
        delay = float(request.headers.get("X-Fake-Token-Delay", cfg.token_delay_s))
        if cfg.first_token_delay_s:
            await asyncio.sleep(cfg.first_token_delay_s)
        if chat:
            await resp.write(_event(head + '{"index":0,"delta":{"role":"assistant","content":""}}]}'))
        done = 0
        while done < n_out:
            if drop and done >= n_out // 2:
                st.dropped += 1
                assert request.transport is not None
                request.transport.close()
                return
            k = min(cfg.tokens_per_chunk, n_out - done)
            done += k
            finish = "null" if done < n_out else ('"length"' if n_out == asked else '"stop"')
            usage = _usage(n_prompt, done) if usage_each else ""
            if emits is not None:
                emits.append(time.perf_counter())
            await resp.write(_event(f"{head}{_choice(chat, ' tok' * k, finish)}]{usage}}}"))
            if done < n_out:
                await asyncio.sleep(delay)
        if opts.get("include_usage"):
            await resp.write(_event(f"{head}]{_usage(n_prompt, done)}}}"))
        if cfg.send_done:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        st.completed += 1


def _choice(chat: bool, piece: str, finish: str) -> str:
    if chat:
        return f'{{"index":0,"delta":{{"content":"{piece}"}},"finish_reason":{finish}}}'
    return f'{{"index":0,"text":"{piece}","finish_reason":{finish}}}'


def _event(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


def _usage(prompt: int, completion: int) -> str:
    return f',"usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt + completion},"completion_tokens":{completion}}}'


def _whole(chat: bool, model: str, n_prompt: int, n_out: int) -> dict[str, Any]:
    text = " tok" * n_out
    choice: dict[str, Any] = (
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        if chat
        else {"index": 0, "text": text, "finish_reason": "length"}
    )
    usage = {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}
    return {
        "id": "cmpl-0",
        "object": "chat.completion" if chat else "text_completion",
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def make_app(config: FakeConfig, stats: FakeStats) -> web.Application:
    h = _Handler(config, stats)
    app = web.Application()
    app.router.add_get("/health", h.health)
    app.router.add_get("/v1/models", h.models)
    app.router.add_post("/tokenize", h.tokenize)
    app.router.add_get("/stats", h.get_stats)
    app.router.add_post("/v1/completions", h.generate)
    app.router.add_post("/v1/chat/completions", h.generate)
    return app


@asynccontextmanager
async def serve_fake(config: FakeConfig | None = None, port: int = 0) -> AsyncIterator[FakeServer]:
    """Serve the fake on 127.0.0.1 (a free port unless ``port`` is given) for the ``async with`` body."""
    cfg = config or FakeConfig()
    stats = FakeStats()
    runner = web.AppRunner(
        make_app(cfg, stats),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,  # a client that goes away cancels its handler, as in vLLM
        shutdown_timeout=0.5,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, bound = runner.addresses[0][:2]
    try:
        yield FakeServer(url=f"http://{host}:{bound}", config=cfg, stats=stats)
    finally:
        with suppress(Exception):
            await runner.cleanup()


async def _serve_forever(cfg: FakeConfig, port: int) -> None:
    async with serve_fake(cfg, port) as srv:
        print("PORT", srv.url.rsplit(":", 1)[1], flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--token-delay", type=float, default=0.0)
    ap.add_argument("--first-token-delay", type=float, default=0.0)
    ap.add_argument("--tokens-per-chunk", type=int, default=1)
    ap.add_argument("--record-emits", action="store_true")
    ap.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args(argv)
    if a.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {a.cpu})
    cfg = FakeConfig(
        model=a.model,
        token_delay_s=a.token_delay,
        first_token_delay_s=a.first_token_delay,
        tokens_per_chunk=a.tokens_per_chunk,
        record_emits=a.record_emits,
    )
    if a.uvloop:
        import uvloop

        uvloop.install()
    with suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(cfg, a.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
