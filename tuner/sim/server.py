"""The HTTP face of the simulator: what a vLLM OpenAI-compatible server answers, on a simulated clock.

Endpoints (vLLM's shapes): ``GET /health``, ``GET /version``, ``GET /v1/models``, ``POST /tokenize``,
``POST /detokenize``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed as server-sent
events, or one JSON body with ``"stream": false``) and ``GET /metrics`` (Prometheus text with vLLM's metric
names).

Clock: simulated time runs ``1 / time_scale`` times faster than wall time (``--sim-time-scale 0.01``: one
simulated second lasts 10 ms). A request's arrival is stamped with the simulated time it reached the server;
each token is written to its stream when the wall clock reaches the end of the step that produced it. So a
client measures every latency multiplied by ``time_scale`` (and throughput divided by it); the histograms in
``/metrics`` are in simulated seconds, as vLLM would report them. When the host cannot keep up (very small
scales, thousands of tokens per wall millisecond) tokens arrive late and several per chunk.

Streaming format: vLLM's, written by :mod:`tuner.sim.openai_api`; ``/metrics`` by :mod:`tuner.sim.prometheus`;
token counts by :mod:`tuner.sim.codec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiohttp import web

from tuner.sim.codec import Codec, block_hashes
from tuner.sim.engine import Engine, Plan, SimRequest
from tuner.sim.openai_api import Reply, TokenStream, error, max_tokens, wants_usage
from tuner.sim.prometheus import ServerMetrics

# ---------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------


class SimServer:
    """One simulated vLLM server: an :class:`Engine` driven against the wall clock, behind aiohttp."""

    def __init__(
        self,
        plan: Plan,
        codec: Codec,
        *,
        served_model_name: str,
        model_path: str,
        time_scale: float = 1.0,
        eos_prob: float = 0.0,
        seed: int = 0,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.plan = plan
        self.codec = codec
        self.name = served_model_name
        self.model_path = model_path
        self.scale = time_scale
        self.eos_prob = eos_prob
        self.engine = Engine(plan)
        self.engine.on_finish = self._on_finish
        self._rng = np.random.default_rng(seed)
        self._t0 = time.monotonic()
        self._wake = asyncio.Event()
        self._rid = 0
        self._driver: asyncio.Task[None] | None = None
        self.observed = ServerMetrics()
        self.created = int(time.time())

    # ---- clock and engine loop --------------------------------------------------------------------
    def sim_now(self) -> float:
        return (time.monotonic() - self._t0) / self.scale

    async def _sleep_until(self, sim_t: float) -> None:
        wait = (sim_t - self.sim_now()) * self.scale
        if wait > 0:
            await asyncio.sleep(wait)

    async def _drive(self) -> None:
        eng = self.engine
        while True:
            if eng.idle():
                self._wake.clear()
                await self._wake.wait()
                continue
            target = self.sim_now()
            if eng.now > target:
                await self._sleep_until(eng.now)
                continue
            if not eng.running and not eng.waiting and eng.next_arrival() > target:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), (eng.next_arrival() - target) * self.scale)
                continue
            events = eng.advance(horizon=target)
            self.observed.fold_itl(eng)
            await self._sleep_until(eng.now)
            for req, n, done in events:
                stream: TokenStream | None = req.tag
                if stream is not None:
                    stream.queue.put_nowait((n, done))

    def _on_finish(self, r: SimRequest) -> None:
        stream: TokenStream | None = r.tag
        self.observed.on_finish(r, stream.finish_reason if stream is not None else "length")
        self.engine.finished.clear()

    def _submit(
        self, prompt_ids: Sequence[int], max_tokens: int, ignore_eos: bool
    ) -> tuple[SimRequest, TokenStream]:
        stream = TokenStream(queue=asyncio.Queue())
        n = max_tokens
        if not ignore_eos and self.eos_prob > 0:
            eos_at = int(self._rng.geometric(self.eos_prob))
            if eos_at < n:
                n, stream.finish_reason = eos_at, "stop"
        self._rid += 1
        req = SimRequest(
            rid=self._rid,
            arrival=self.sim_now(),
            prompt_len=len(prompt_ids),
            max_tokens=n,
            hashes=block_hashes(prompt_ids, self.plan.block_size) if self.plan.prefix_caching else (),
            tag=stream,
        )
        self.engine.add(req)
        self._wake.set()
        return req, stream

    # ---- HTTP -------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ping", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        self._t0 = time.monotonic()
        self._driver = asyncio.get_running_loop().create_task(self._drive())

    async def _stop(self, _: web.Application) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver

    def _headers(self) -> dict[str, str]:
        return {"x-tuner-sim-time-scale": repr(self.scale)}

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200, headers=self._headers())

    async def version(self, _: web.Request) -> web.Response:
        from tuner import __version__

        return web.json_response({"version": f"sim-{__version__}"})

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.name,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "vllm",
                        "root": self.model_path,
                        "parent": None,
                        "max_model_len": self.plan.max_model_len,
                    }
                ],
            }
        )

    async def _json(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "Invalid JSON body")
        if not isinstance(body, dict):
            return error(400, "The request body must be a JSON object")
        return body

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if "messages" in body:
            ids = self.codec.encode_chat(body["messages"])
        else:
            ids = self.codec.encode(str(body.get("prompt", "")), bool(body.get("add_special_tokens", True)))
        return web.json_response(
            {"count": len(ids), "max_model_len": self.plan.max_model_len, "tokens": ids, "token_strs": None}
        )

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        return web.json_response({"prompt": self.codec.decode([int(t) for t in body.get("tokens", [])])})

    def _check_model(self, body: dict[str, Any]) -> web.Response | None:
        m = body.get("model")
        if m is not None and m not in (self.name, self.model_path):
            return error(404, f"The model `{m}` does not exist.", "NotFoundError")
        return None

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if (bad := self._check_model(body)) is not None:
            return bad
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            if prompt and all(isinstance(t, int) for t in prompt):
                ids = [int(t) for t in prompt]
            elif len(prompt) == 1 and isinstance(prompt[0], str):
                ids = self.codec.encode(prompt[0])
            else:
                return error(400, "the simulator serves one prompt per request")
        else:
            ids = self.codec.encode(str(prompt))
        return await self._generate(request, body, ids, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if (bad := self._check_model(body)) is not None:
            return bad
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "messages must be a non-empty list")
        ids = self.codec.encode_chat(messages)
        return await self._generate(request, body, ids, chat=True)

    async def _generate(
        self, request: web.Request, body: dict[str, Any], ids: list[int], *, chat: bool
    ) -> web.StreamResponse:
        n = max_tokens(body, len(ids), self.plan.max_model_len, chat)
        if isinstance(n, web.Response):
            return n
        req, st = self._submit(ids, n, bool(body.get("ignore_eos", False)))
        reply = Reply(chat=chat, model=self.name, n_prompt=len(ids), headers=self._headers())
        try:
            if not body.get("stream", False):
                return await reply.collect(st, self.codec.sample_text)
            return await reply.stream(request, st, self.codec.sample_text, wants_usage(body))
        finally:
            if math.isnan(req.finish):
                self.engine.abort(req)

    async def metrics(self, _: web.Request) -> web.Response:
        self.observed.fold_itl(self.engine)
        return web.Response(text=self.render_metrics(), content_type="text/plain", charset="utf-8")

    def render_metrics(self) -> str:
        """Prometheus exposition text with vLLM's metric names (:mod:`tuner.sim.prometheus`)."""
        return self.observed.render(self.engine, self.name, self.scale)
