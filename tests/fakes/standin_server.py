"""A stand-in for vLLM's OpenAI server, for lifecycle tests. Stdlib only; runs in a fraction of a second.

Usage (vLLM-like argv; unknown flags are ignored)::

    python tests/fakes/standin_server.py --port P [--host H] [--mode MODE] [--die-after S]
        [--startup-delay S] [--spawn-child] [--model M] [...any vLLM flag...]

Modes:

* ``healthy``         bind, answer ``/health`` 200, ``/v1/models`` and ``/metrics``; exit 0 on SIGTERM.
* ``never-healthy``   bind, answer ``/health`` 503 forever.
* ``exit-oom``        print the CPU build's memory-check failure, exit 1.
* ``exit-invalid``    print an argparse error, exit 2.
* ``die-after``       healthy, then die with a traceback after ``--die-after`` seconds (exit 1).
* ``ignore-sigterm``  healthy, but SIGTERM is ignored (so is it in the spawned child): needs SIGKILL.

``--spawn-child`` starts a grandchild (``sleep``-like Python loop) in the same process group and logs its
pid as ``standin child pid N``. A port already taken makes it print vLLM's bind error and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("healthy", "never-healthy", "exit-oom", "exit-invalid", "die-after", "ignore-sigterm")

METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="standin"} 0.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="standin"} 0.0
"""


def log(level: str, where: str, text: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"(APIServer pid={os.getpid()}) {level} {stamp} [{where}] {text}", flush=True)


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                code = 503 if args.mode == "never-healthy" else 200
                self._send(code, "text/plain", b"")
            elif self.path == "/v1/models":
                body = {"object": "list", "data": [{"id": args.model, "object": "model", "owned_by": "vllm"}]}
                self._send(200, "application/json", json.dumps(body).encode())
            elif self.path == "/metrics":
                self._send(200, "text/plain; version=0.0.4", METRICS.encode())
            else:
                self._send(404, "application/json", b'{"detail":"Not Found"}')

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: object) -> None:
            log("INFO", "standin", f'127.0.0.1 - "{self.requestline}" {a[1] if len(a) > 1 else ""}')

    return Handler


def spawn_child(ignore_sigterm: bool) -> None:
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "while True: time.sleep(0.1)\n"
    child = subprocess.Popen([sys.executable, "-c", code])
    print(f"standin child pid {child.pid}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", default="standin")
    p.add_argument("--mode", choices=MODES, default="healthy")
    p.add_argument("--die-after", type=float, default=1.0)
    p.add_argument("--startup-delay", type=float, default=0.0)
    p.add_argument("--spawn-child", action="store_true")
    args, unknown = p.parse_known_args(argv)

    if args.mode == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log("INFO", "api_utils.py:286", f"non-default args: {vars(args)} ignored: {unknown}")
    if args.spawn_child:
        spawn_child(args.mode == "ignore-sigterm")
    if args.startup_delay:
        time.sleep(args.startup_delay)

    if args.mode == "exit-oom":
        log("INFO", "core.py:133", "Initializing a V1 LLM engine (v0.32.0) with config: model='standin'")
        log(
            "ERROR",
            "multiproc_executor.py:953",
            "ValueError: Available memory on node 0 (6.85/9.96 GiB) on startup is less than desired CPU memory "
            "utilization (0.99, 9.86 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls "
            "the fraction of CPU memory reserved (despite its name).",
        )
        print("Traceback (most recent call last):", flush=True)
        print(
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
        )
        return 1
    if args.mode == "exit-invalid":
        print("usage: api_server.py [-h] [--port PORT] ...", file=sys.stderr)
        print("api_server.py: error: unrecognized arguments: --no-such-flag", file=sys.stderr)
        return 2

    try:
        server = ThreadingHTTPServer((args.host, args.port), make_handler(args))
    except OSError as e:
        print("Traceback (most recent call last):", flush=True)
        print(f"OSError: [Errno {e.errno}] {e.strerror}", flush=True)
        return 1
    server.daemon_threads = True
    if args.mode == "die-after":

        def die() -> None:
            time.sleep(args.die_after)
            print("Traceback (most recent call last):", flush=True)
            print("RuntimeError: CUDA error: an illegal memory access was encountered", flush=True)
            print("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.", flush=True)
            os._exit(1)

        threading.Thread(target=die, daemon=True).start()
    log("INFO", "launcher.py:46", f"Route: /health, Methods: GET (port {args.port})")
    log("INFO", "server.py:82", "Started server process")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
