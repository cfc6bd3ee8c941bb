"""A stand-in vLLM OpenAI server *process* for fault tests: healthy in well under a second, vLLM-like argv,
an "engine" child process in its group, and faults switched on through environment variables.

Usage (as a study's ``server.command: [python, tests/fakes/fake_vllm.py]``)::

    python tests/fakes/fake_vllm.py --model M --host H --port P [--served-model-name N] [--api-key K] [...]

Any other ``--flag [value]`` is accepted and ignored (as vLLM would use it), unless ``FAKE_VLLM_STRICT=1``:
then a flag outside :data:`KNOWN_FLAGS` fails like vLLM's argparse (exit 2, "unrecognized arguments").

Endpoints (aiohttp, reusing :mod:`tests.fakes.sse_server`): ``GET /health``, ``GET /v1/models``, streaming
``POST /v1/completions`` and ``/v1/chat/completions`` (a text chunk per token, honouring ``max_tokens``; a
final usage chunk with ``stream_options.include_usage``; ``data: [DONE]``), ``POST /tokenize`` and
``GET /metrics`` (a few ``vllm:`` series). With an API key (``--api-key`` or ``VLLM_API_KEY``, as vLLM)
``/v1/*`` needs ``Authorization: Bearer <key>``; it logs its non-default args, the key included, as vLLM
does, so a key passed on the command line ends up in the server's log.

At start it spawns an "engine" child (same process group, like vLLM's EngineCore). The child does not die
with its parent: only a group kill (or the leftover sweep) removes it. When the engine dies the API process
logs vLLM's EngineDeadError traceback and exits 1 after ``FAKE_VLLM_DEATH_DELAY`` seconds (default 0;
meanwhile ``/health`` answers 503 and requests, the held one included, fail at once).

Fault knobs (environment; the study file's ``server.env`` or tuner's own environment passes them):

``FAKE_VLLM_STATUS=PATH``          append one JSON line per event (launched, engine, healthy, request,
                                   completed, sigterm, engine_dead, exit), each with this server's ``index``
``FAKE_VLLM_FAULT_ON=2,3|all``     the knobs below apply only to these server starts (1-based, counted in
                                   the status file; default all)
``FAKE_VLLM_START_DELAY=S``        sleep S seconds before listening (slow start)
``FAKE_VLLM_EXIT_AT_START=MSG``    print MSG (``oom``: the CPU build's memory-check failure) and exit
                                   ``FAKE_VLLM_EXIT_CODE`` (default 1)
``FAKE_VLLM_HANG_HEALTH=1``        ``/health`` never answers
``FAKE_VLLM_HANG_REQUEST=N``       the N-th completion request never produces a token
``FAKE_VLLM_DIE_AFTER=N``          after N completed requests: ``FAKE_VLLM_DIE_HOW`` = ``engine`` (SIGKILL the
                                   engine child; default), ``group`` (SIGKILL the whole group) or ``exit``
``FAKE_VLLM_STOP_DELAY=S``         on SIGTERM, take S seconds to shut down
``FAKE_VLLM_TOKEN_DELAY=S``        seconds between streamed tokens (default 0.002)
``FAKE_VLLM_LOG_ENV=A,B``          print ``A=<value>`` lines at start (a server that leaks its environment)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes.sse_server import FakeConfig, FakeStats, _Handler

KNOWN_FLAGS = frozenset(
    {
        "model", "host", "port", "served-model-name", "api-key", "hf-token", "max-model-len",
        "gpu-memory-utilization", "max-num-seqs", "max-num-batched-tokens", "block-size",
        "enable-prefix-caching", "no-enable-prefix-caching", "enable-chunked-prefill",
        "no-enable-chunked-prefill", "quantization", "dtype", "kv-cache-dtype", "seed", "swap-space",
        "tensor-parallel-size", "disable-log-requests", "disable-log-stats", "long-prefill-token-threshold",
        "tag",
    }
)  # fmt: skip

OOM_TEXT = (
    "ValueError: Available memory on node 0 (6.85/9.96 GiB) on startup is less than desired CPU memory "
    "utilization (0.99, 9.86 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls the "
    "fraction of CPU memory reserved (despite its name)."
)

ENGINE_CODE = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGHUP, signal.SIG_IGN)
while True:
    time.sleep(0.2)
"""


def env_float(name: str, default: float = 0.0) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


def env_int(name: str) -> int | None:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else None


def log(level: str, where: str, text: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"(APIServer pid={os.getpid()}) {level} {stamp} [{where}] {text}", flush=True)


class Status:
    """The JSON-lines event log shared by every fake server of a test (appends under an exclusive lock)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.index = 0

    def launch(self, record: dict[str, Any]) -> int:
        """Record this start; returns its 1-based index among all starts logged in the file."""
        if not self.path:
            return 0
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            before = sum('"event": "launched"' in line for line in f)
            self.index = before + 1
            f.write(json.dumps({"event": "launched", "index": self.index, **record}) + "\n")
            f.flush()
        return self.index

    def event(self, name: str, **data: Any) -> None:
        if not self.path:
            return
        line = json.dumps({"event": name, "index": self.index, "pid": os.getpid(), "t": time.time(), **data})
        with open(self.path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line + "\n")


def parse_argv(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="api_server.py")
    p.add_argument("--model", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--api-key", default=None)
    args, unknown = p.parse_known_args(argv)
    args.model = args.model or "fake-model"
    return args, unknown


def unknown_flags(unknown: list[str]) -> list[str]:
    names = [a for a in unknown if a.startswith("--")]
    return [a for a in names if a[2:].split("=", 1)[0] not in KNOWN_FLAGS]


class Engine:
    """The engine child and the watch that takes the API process down when it dies."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ENGINE_CODE, "fake-vllm-engine"], stdin=subprocess.DEVNULL
        )
        self.dead = False
        self.died = asyncio.Event()
        print(f"(EngineCore_DP0 pid={self.proc.pid}) INFO fake engine core started", flush=True)
        status.event("engine", engine_pid=self.proc.pid)

    async def watch(self) -> None:
        while self.proc.poll() is None:
            await asyncio.sleep(0.05)
        self.dead = True
        self.died.set()  # in-flight requests fail at once; the process lingers FAKE_VLLM_DEATH_DELAY s
        rc = self.proc.returncode
        self.status.event("engine_dead", returncode=rc)
        print(f"(APIServer pid={os.getpid()}) ERROR [async_llm.py:480] AsyncLLM output_handler failed.")
        print("Traceback (most recent call last):")
        print('  File "vllm/v1/engine/async_llm.py", line 439, in output_handler')
        print("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace "
              f"(above) for the root cause. (engine exited with {rc})", flush=True)  # fmt: skip
        await asyncio.sleep(env_float("FAKE_VLLM_DEATH_DELAY"))
        self.status.event("exit", returncode=1)
        os._exit(1)


class FaultyHandler(_Handler):
    """The SSE fake with fault hooks around each completion request."""

    def __init__(self, config: FakeConfig, stats: FakeStats, *, status: Status, engine: Engine,
                 api_key: str | None, faults: bool) -> None:  # fmt: skip
        super().__init__(config, stats)
        self.status = status
        self.engine = engine
        self.api_key = api_key
        self.faults = faults
        self.seen = 0
        self.completed = 0
        self.generated = 0

    async def health(self, request: web.Request) -> web.Response:
        if self.faults and os.environ.get("FAKE_VLLM_HANG_HEALTH") == "1":
            await asyncio.Event().wait()
        if self.engine.dead:
            return web.Response(status=503, text="EngineDeadError")
        return web.Response(text="")

    async def metrics(self, request: web.Request) -> web.Response:
        name = self.cfg.model
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{engine="0",model_name="{name}"}} {self.stats.in_flight}.0',
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{engine="0",model_name="{name}"}} 0.0',
            "# TYPE vllm:generation_tokens_total counter",
            f'vllm:generation_tokens_total{{engine="0",model_name="{name}"}} {float(self.generated)}',
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="{name}"}} '
            f"{float(self.completed)}",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="{name}"}} 0.01',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def generate(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        if self.engine.dead:
            return web.json_response({"error": {"message": "EngineDeadError", "code": 500}}, status=500)
        self.seen += 1
        n = self.seen
        self.status.event("request", n=n)
        if self.faults and env_int("FAKE_VLLM_HANG_REQUEST") == n:
            await self.engine.died.wait()  # forever, unless the engine dies
            return web.json_response({"error": {"message": "EngineDeadError", "code": 500}}, status=500)
        body = await request.json()  # aiohttp keeps the body: the handler below reads it again
        resp = await super().generate(request)
        self.completed += 1
        self.generated += int(body.get("max_tokens") or 16)
        self.status.event("completed", n=self.completed)
        die_after = env_int("FAKE_VLLM_DIE_AFTER") if self.faults else None
        if die_after is not None and self.completed >= die_after:
            self.die(os.environ.get("FAKE_VLLM_DIE_HOW", "engine"))
        return resp

    def die(self, how: str) -> None:
        self.status.event("die", how=how)
        if how == "group":
            os.killpg(os.getpgid(0), signal.SIGKILL)
        elif how == "exit":
            print("Traceback (most recent call last):")
            print("RuntimeError: CUDA error: an illegal memory access was encountered", flush=True)
            self.status.event("exit", returncode=1)
            os._exit(1)
        else:
            os.kill(self.engine.proc.pid, signal.SIGKILL)


async def serve(args: argparse.Namespace, status: Status, engine: Engine, faults: bool) -> None:
    api_key = args.api_key or os.environ.get("VLLM_API_KEY") or None
    cfg = FakeConfig(
        model=args.served_model_name or args.model, token_delay_s=env_float("FAKE_VLLM_TOKEN_DELAY", 0.002)
    )
    h = FaultyHandler(cfg, FakeStats(), status=status, engine=engine, api_key=api_key, faults=faults)
    app = web.Application()
    app.router.add_get("/health", h.health)
    app.router.add_get("/v1/models", h.models)
    app.router.add_get("/metrics", h.metrics)
    app.router.add_post("/tokenize", h.tokenize)
    app.router.add_post("/v1/completions", h.generate)
    app.router.add_post("/v1/chat/completions", h.generate)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
    except OSError as e:
        print("Traceback (most recent call last):", flush=True)
        print(f"OSError: [Errno {e.errno}] {e.strerror}", flush=True)  # as uvicorn words it
        engine.proc.kill()
        status.event("exit", returncode=1)
        os._exit(1)
    watch = asyncio.create_task(engine.watch())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    log("INFO", "launcher.py:46", f"Route: /health, Methods: GET (port {args.port})")
    log("INFO", "server.py:82", "Started server process")
    log("INFO", "launcher.py:80", "Application startup complete.")
    status.event("healthy", port=args.port)
    await stop.wait()
    status.event("sigterm")
    log("INFO", "launcher.py:99", "Shutting down FastAPI HTTP server.")
    watch.cancel()
    delay = env_float("FAKE_VLLM_STOP_DELAY") if faults else 0.0
    if delay:
        await asyncio.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        engine.proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        engine.proc.wait(timeout=5)
    await runner.cleanup()
    status.event("exit", returncode=0)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parse_argv(raw)
    status = Status(os.environ.get("FAKE_VLLM_STATUS"))
    index = status.launch({"pid": os.getpid(), "pgid": os.getpgid(0), "argv": raw})
    fault_on = os.environ.get("FAKE_VLLM_FAULT_ON", "all").strip()
    faults = fault_on in ("", "all") or str(index) in {x.strip() for x in fault_on.split(",")}

    shown = {"model": args.model, "host": args.host, "port": args.port, "api_key": args.api_key}
    log("INFO", "api_utils.py:286", f"non-default args: {shown} other: {unknown}")
    for name in filter(None, os.environ.get("FAKE_VLLM_LOG_ENV", "").split(",")):
        print(f"{name}={os.environ.get(name, '')}", flush=True)

    bad = unknown_flags(unknown) if os.environ.get("FAKE_VLLM_STRICT") == "1" else []
    if bad:
        print("usage: api_server.py [-h] [--model MODEL] [--port PORT] ...", file=sys.stderr)
        print(f"api_server.py: error: unrecognized arguments: {' '.join(bad)}", file=sys.stderr, flush=True)
        status.event("exit", returncode=2)
        return 2
    message = os.environ.get("FAKE_VLLM_EXIT_AT_START", "") if faults else ""
    if message:
        text = OOM_TEXT if message == "oom" else message
        log("INFO", "core.py:133", "Initializing a V1 LLM engine (v0.32.0) with config: model='fake'")
        log("ERROR", "multiproc_executor.py:953", text)
        print("Traceback (most recent call last):", flush=True)
        print("RuntimeError: Engine core initialization failed. See root cause above.", flush=True)
        code = env_int("FAKE_VLLM_EXIT_CODE") or 1
        status.event("exit", returncode=code)
        return code

    engine = Engine(status)
    delay = env_float("FAKE_VLLM_START_DELAY") if faults else 0.0
    if delay:
        log("INFO", "gpu_model_runner.py:1200", f"Loading weights (taking {delay:g} s) ...")
        time.sleep(delay)
    asyncio.run(serve(args, status, engine, faults))
    return 0


if __name__ == "__main__":
    sys.exit(main())
