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

Streaming format (as vLLM): ``data: {json}\\n\\n`` chunks — completions carry ``choices[0].text``, chat
``choices[0].delta.content`` (first chunk: ``delta.role``) — the last content chunk has ``finish_reason``
(``length``, or ``stop`` after a simulated end-of-sequence), then one usage chunk (``choices: []``) when
``stream_options.include_usage`` is true, then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from tuner.sim.engine import Engine, Plan, SimRequest

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
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


# ---------------------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------------------


class Codec:
    """Token counting and output text. The model's own tokenizer when its folder has one (``tokenizer.json``
    read with the ``tokenizers`` library and the chat template rendered with Jinja, as ``transformers``
    does; other tokenizer formats through ``transformers``), else one token per whitespace-separated word
    (ids from a stable hash)."""

    def __init__(
        self, model: str, tokenizer: str | None = None, vocab_size: int = 32000, seed: int = 0
    ) -> None:
        self.vocab_size = vocab_size
        self.kind = "whitespace"
        self._fast: Any = None  # tokenizers.Tokenizer
        self._hf: Any = None  # transformers tokenizer
        self._template: Any = None  # jinja2 template
        self._specials: dict[str, str] = {}
        folder = Path(tokenizer or model).expanduser()
        special: set[int] = set()
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.vocab_size = int(self._fast.get_vocab_size())
            special = {i for i, t in self._fast.get_added_tokens_decoder().items() if t.special}
            self._load_template(folder)
            self.kind = "tokenizers"
        elif folder.is_dir():
            try:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                self.vocab_size = int(self._hf.vocab_size)
                special = set(self._hf.all_special_ids or [])
                self.kind = "transformers"
            except Exception:  # no tokenizer files, or none transformers can read: count words
                self._hf = None
        rng = np.random.default_rng(seed)
        self._rng = rng
        if self.kind == "whitespace":
            self.pool = [(int(i), f" w{int(i)}") for i in rng.integers(3, max(self.vocab_size, 4), size=256)]
        else:
            ids = [int(i) for i in rng.integers(0, self.vocab_size, size=512) if int(i) not in special][
                :256
            ] or [0]
            self.pool = [(i, " " + self.decode([i]).strip()) for i in ids]

    def _load_template(self, folder: Path) -> None:
        cfg: dict[str, Any] = {}
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cfg = {}
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            v = cfg.get(name)
            if isinstance(v, dict):
                v = v.get("content")
            if isinstance(v, str):
                self._specials[name] = v
        text = cfg.get("chat_template")
        jinja_file = folder / "chat_template.jinja"
        if jinja_file.is_file():
            text = jinja_file.read_text(encoding="utf-8")
        if isinstance(text, str) and text:
            import jinja2

            def raise_exception(msg: str) -> None:
                raise jinja2.TemplateError(msg)

            env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(text)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=add_special_tokens).ids)
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=add_special_tokens))
        return [_word_id(w, self.vocab_size) for w in text.split()]

    def encode_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        if self._template is not None:
            text = self._template.render(
                messages=list(messages), add_generation_prompt=True, **self._specials
            )
            return self.encode(text, add_special_tokens=False)
        if self._hf is not None and getattr(self._hf, "chat_template", None):
            text = self._hf.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            return self.encode(str(text), add_special_tokens=False)
        joined = " ".join(_content_text(m.get("content")) for m in messages)
        return self.encode(joined, add_special_tokens=self.kind != "whitespace")

    def decode(self, ids: Sequence[int]) -> str:
        if self._fast is not None:
            return str(self._fast.decode(list(ids)))
        if self._hf is not None:
            return str(self._hf.decode(list(ids)))
        return " ".join(f"w{i}" for i in ids)

    def sample_text(self, n: int) -> str:
        """Text of ``n`` generated tokens."""
        idx = self._rng.integers(0, len(self.pool), size=n)
        return "".join(self.pool[int(i)][1] for i in idx)


def _word_id(word: str, vocab: int) -> int:
    h = 2166136261
    for ch in word.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return 3 + h % max(vocab - 3, 1)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def block_hashes(tokens: Sequence[int], block_size: int) -> list[int]:
    """Chained hashes of the full blocks of ``tokens`` (block i's hash covers tokens 0 .. (i+1)*bs)."""
    out: list[int] = []
    prev = 0
    for i in range(len(tokens) // block_size):
        prev = hash((prev, tuple(tokens[i * block_size : (i + 1) * block_size])))
        out.append(prev)
    return out


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Stream:
    queue: asyncio.Queue[tuple[int, bool]]
    finish_reason: str = "length"


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
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.queue_time = Histogram(E2E_BUCKETS)
        self.success: dict[str, int] = {}
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
            self._fold_itl()
            await self._sleep_until(eng.now)
            for req, n, done in events:
                stream: _Stream | None = req.tag
                if stream is not None:
                    stream.queue.put_nowait((n, done))

    def _fold_itl(self) -> None:
        eng = self.engine
        if eng.itl_values:
            v = np.concatenate(eng.itl_values)
            w = np.concatenate(eng.itl_weights)
            eng.itl_values.clear()
            eng.itl_weights.clear()
            self.itl.observe(v, w)

    def _on_finish(self, r: SimRequest) -> None:
        if not math.isnan(r.first_token):
            self.ttft.observe(np.array([r.first_token - r.arrival]))
        self.e2e.observe(np.array([r.finish - r.arrival]))
        self.queue_time.observe(np.array([max(r.ready - r.arrival, 0.0)]))
        stream: _Stream | None = r.tag
        reason = stream.finish_reason if stream is not None else "length"
        self.success[reason] = self.success.get(reason, 0) + 1
        self.engine.finished.clear()

    def _submit(
        self, prompt_ids: Sequence[int], max_tokens: int, ignore_eos: bool
    ) -> tuple[SimRequest, _Stream]:
        stream = _Stream(queue=asyncio.Queue())
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

    @staticmethod
    def _error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
        return web.json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": status}}, status=status
        )

    async def _json(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "Invalid JSON body")
        if not isinstance(body, dict):
            return self._error(400, "The request body must be a JSON object")
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
            return self._error(404, f"The model `{m}` does not exist.", "NotFoundError")
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
                return self._error(400, "the simulator serves one prompt per request")
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
            return self._error(400, "messages must be a non-empty list")
        ids = self.codec.encode_chat(messages)
        return await self._generate(request, body, ids, chat=True)

    async def _generate(
        self, request: web.Request, body: dict[str, Any], ids: list[int], *, chat: bool
    ) -> web.StreamResponse:
        limit = self.plan.max_model_len
        mt = body.get("max_completion_tokens") if chat else None
        max_tokens = mt if mt is not None else body.get("max_tokens")
        if max_tokens is None:
            max_tokens = limit - len(ids)
        try:
            max_tokens = int(max_tokens)
        except (TypeError, ValueError):
            return self._error(400, "max_tokens must be an integer")
        if max_tokens < 1:
            return self._error(400, f"max_tokens must be at least 1, got {max_tokens}.")
        if len(ids) + max_tokens > limit:
            return self._error(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion.",
            )
        if not ids:
            return self._error(400, "The prompt is empty.")
        ignore_eos = bool(body.get("ignore_eos", False))
        stream = bool(body.get("stream", False))
        opts = body.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage", False)) if isinstance(opts, dict) else False
        req, st = self._submit(ids, max_tokens, ignore_eos)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        obj = "chat.completion.chunk" if chat else "text_completion"
        if not stream:
            return await self._collect(req, st, rid, chat, len(ids))
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **self._headers()},
        )
        produced = 0
        try:
            await resp.prepare(request)
            if chat:
                first = {"role": "assistant", "content": ""}
                await self._send(
                    resp, rid, obj, {"index": 0, "delta": first, "logprobs": None, "finish_reason": None}
                )
            while True:
                n, done = await st.queue.get()
                produced += n
                text = self.codec.sample_text(n)
                reason = st.finish_reason if done else None
                if chat:
                    choice: dict[str, Any] = {
                        "index": 0,
                        "delta": {"content": text},
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                else:
                    choice = {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": reason,
                        "stop_reason": None,
                    }
                await self._send(resp, rid, obj, choice)
                if done:
                    break
            if include_usage:
                usage = {
                    "prompt_tokens": len(ids),
                    "total_tokens": len(ids) + produced,
                    "completion_tokens": produced,
                }
                await resp.write(
                    b"data: "
                    + json.dumps(
                        {
                            "id": rid,
                            "object": obj,
                            "created": int(time.time()),
                            "model": self.name,
                            "choices": [],
                            "usage": usage,
                        }
                    ).encode()
                    + b"\n\n"
                )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        finally:
            if math.isnan(req.finish):
                self.engine.abort(req)
        return resp

    async def _send(self, resp: web.StreamResponse, rid: str, obj: str, choice: dict[str, Any]) -> None:
        chunk = {
            "id": rid,
            "object": obj,
            "created": int(time.time()),
            "model": self.name,
            "choices": [choice],
        }
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    async def _collect(
        self, req: SimRequest, st: _Stream, rid: str, chat: bool, n_prompt: int
    ) -> web.Response:
        produced = 0
        try:
            while True:
                n, done = await st.queue.get()
                produced += n
                if done:
                    break
        finally:
            if math.isnan(req.finish):
                self.engine.abort(req)
        text = self.codec.sample_text(produced)
        usage = {
            "prompt_tokens": n_prompt,
            "total_tokens": n_prompt + produced,
            "completion_tokens": produced,
        }
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": st.finish_reason,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": st.finish_reason,
                "stop_reason": None,
            }
            obj = "text_completion"
        return web.json_response(
            {
                "id": rid,
                "object": obj,
                "created": int(time.time()),
                "model": self.name,
                "choices": [choice],
                "usage": usage,
            },
            headers=self._headers(),
        )

    async def metrics(self, _: web.Request) -> web.Response:
        self._fold_itl()
        return web.Response(text=self.render_metrics(), content_type="text/plain", charset="utf-8")

    def render_metrics(self) -> str:
        """Prometheus exposition text with vLLM's metric names (histograms in simulated seconds)."""
        eng = self.engine
        st = eng.stats
        lab = f'engine="0",model_name="{self.name}"'
        used = eng.kv.used / eng.plan.num_blocks if eng.plan.num_blocks else 0.0
        waiting = len(eng.waiting) + len(eng._pending)
        lines: list[str] = []

        def gauge(name: str, value: float, help_text: str, labels: str = lab) -> None:
            lines.extend(
                [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {float(value)}"]
            )

        def counter(name: str, value: float, help_text: str, labels: str = lab) -> None:
            lines.extend(
                [
                    f"# HELP {name} {help_text}",
                    f"# TYPE {name} counter",
                    f"{name}_total{{{labels}}} {float(value)}",
                ]
            )

        gauge("vllm:num_requests_running", len(eng.running), "Number of requests in model execution batches.")
        gauge("vllm:num_requests_waiting", waiting, "Number of requests waiting to be processed.")
        gauge("vllm:kv_cache_usage_perc", used, "KV-cache usage. 1 means 100 percent usage.")
        counter("vllm:num_preemptions", st.preemptions, "Cumulative number of preemption from the engine.")
        counter("vllm:prompt_tokens", st.prompt_tokens, "Number of prefill tokens processed.")
        counter("vllm:generation_tokens", st.generation_tokens, "Number of generation tokens processed.")
        counter(
            "vllm:prefix_cache_queries",
            st.prefix_queries,
            "Prefix cache queries, in terms of number of queried tokens.",
        )
        counter(
            "vllm:prefix_cache_hits",
            st.prefix_hits,
            "Prefix cache hits, in terms of number of cached tokens.",
        )
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
        p = self.plan
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
        gauge("vllm:cache_config_info", 1.0, "Information of the LLMEngine CacheConfig", cache_labels)
        gauge("tuner_sim_time_scale", self.scale, "Wall seconds per simulated second (tuner.sim).", lab)
        return "\n".join(lines) + "\n"
