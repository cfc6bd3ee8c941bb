"""Benchmark: can the load generator's client keep up with a fast server?

Starts the fake SSE server (tests/fakes/sse_server.py, zero delay, one token per chunk) in its own process
on its own core, pins this process (the client) to another core, and for several concurrencies prints:

* ``tok/s``        — streamed output tokens per second the client received (wall clock);
* ``client CPU``   — the client's CPU time over the wall time (near 100 %: the client is the bottleneck);
* ``CPU µs/chunk`` — client CPU time per streamed chunk, and ``max tok/s`` = 1e6 / that: what one core of
  client could take if the server were infinitely fast;
* ``lag p50/p99``  — client timestamp minus the server's emit time for each chunk (both read
  ``time.perf_counter``, the same monotonic clock): how late the recorded times are, under that load.

Scenarios ``C`` stream as fast as the server can (the client saturates: lag there is queueing); ``C@MS``
paces each stream to one chunk per MS milliseconds, e.g. ``256@10`` offers ~25k tokens/s, about what an
H200 serving a small model streams: there the lag is the timestamp error the client adds.

Then, at ``--traffic-concurrency`` as fast as the server goes, one row per kind of traffic, built by
:func:`tuner.load.traffic.build_traffic` with a tiny model's tokenizer (written to a temporary folder):
``fixed`` lengths, a length ``distribution`` (lognormal outputs), a ``dataset`` (a generated JSONL) and
``sessions`` (4 turns: every reply but the last is collected and re-sent, so its events are parsed).

Run: ``python bench/load_generator.py [--tokens 256] [--requests-per-stream 4] [--scenarios 1 64 256@10]
[--traffic fixed distribution dataset sessions] [--uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.config.workload import Workload  # noqa: E402
from tuner.load.client import Target  # noqa: E402
from tuner.load.conversation import Conversation, Turn  # noqa: E402
from tuner.load.prompts import Prompt, load_tokenizer  # noqa: E402
from tuner.load.records import RequestRecord  # noqa: E402
from tuner.load.runner import LoadPlan, new_session, offer_load  # noqa: E402
from tuner.load.traffic import build_traffic  # noqa: E402
from tuner.modelgen import write_tiny_model  # noqa: E402


def pin(cpu: int) -> bool:
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})
        return True
    return False


def start_server(cpu: int | None, uvloop: bool) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "tests.fakes.sse_server", "--port", "0", "--record-emits"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if uvloop:
        cmd.append("--uvloop")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{line.split()[1]}"


async def fetch_emits(url: str) -> dict[str, list[float]]:
    async with aiohttp.ClientSession() as s, s.get(url + "/stats") as r:
        stats: dict[str, Any] = json.loads(await r.read())
    emits: dict[str, list[float]] = stats["emits"]
    return emits


async def timed_load(
    url: str, convs: Sequence[Conversation], plan: LoadPlan, headers: dict[str, str]
) -> tuple[list[RequestRecord], dict[str, float]]:
    """Offer ``plan``; the records and the figures every row has (tok/s, client CPU, CPU per chunk)."""
    async with new_session() as session:
        w0, c0 = time.perf_counter(), time.process_time()
        records = await offer_load(Target(url, "fake-model", headers=headers), convs, plan, session=session)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    failed = [r.error for r in records if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed, e.g. {failed[0]}")
    measured = [r for r in records if not r.warmup]
    t0 = min(r.send_time for r in measured)
    t1 = max(r.end_time or t0 for r in measured)
    chunks = sum(len(r.token_times) for r in measured)
    chunks_all = sum(len(r.token_times) for r in records)
    return records, {
        "tok_s": chunks / (t1 - t0),
        "cpu_frac": cpu / wall,
        "us_per_chunk": cpu / chunks_all * 1e6,
    }


async def scenario(
    url: str, concurrency: int, delay: float, tokens: int, per_stream: int
) -> dict[str, float]:
    n = concurrency * per_stream
    tag = f"c{concurrency}-{time.monotonic_ns()}"
    prompts = [Prompt(text=f"{tag} {i}", messages=None, n_tokens=3) for i in range(n + concurrency)]
    convs = [Conversation((Turn(p, tokens),)) for p in prompts]
    plan = LoadPlan(concurrency=concurrency, requests=n, warmup_requests=concurrency)
    records, row = await timed_load(url, convs, plan, {"X-Fake-Token-Delay": str(delay)})
    emits = await fetch_emits(url)
    lags = np.concatenate(
        [
            np.asarray(r.token_times) - np.asarray(emits[prompts[i].text or ""])
            for i, r in enumerate(records)
            if not r.warmup
        ]
    )
    return {
        "concurrency": concurrency,
        "delay_ms": delay * 1e3,
        **row,
        "lag_p50_us": float(np.percentile(lags, 50) * 1e6),
        "lag_p99_us": float(np.percentile(lags, 99) * 1e6),
    }


#: the workload of each kind of traffic (``--traffic``); ``{dataset}`` is the generated JSONL
TRAFFIC: dict[str, dict[str, object]] = {
    "fixed": {"input_tokens": 64, "output_tokens": 256},
    "distribution": {
        "input_tokens": {"dist": "uniform", "low": 16, "high": 128},
        "output_tokens": {"dist": "lognormal", "median": 256, "sigma": 0.6, "min": 16, "max": 1024},
    },
    "dataset": {"dataset": {"path": "{dataset}", "format": "jsonl"}},
    "sessions": {"input_tokens": 64, "output_tokens": 64, "sessions": {"turns": 4, "think_time_s": 0}},
}


def write_dataset(folder: Path, count: int) -> Path:
    """A JSONL of ``count`` text prompts with output lengths from 64 to 448 tokens."""
    path = folder / "prompts.jsonl"
    lines = [json.dumps({"prompt": f"request {i}: " + "say more " * (4 + i % 16), "output_tokens": 64 * (1 + i % 7)})
             for i in range(count)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


async def traffic_scenario(
    url: str, kind: str, concurrency: int, requests: int, folder: Path
) -> dict[str, Any]:
    tokenizer = load_tokenizer(str(folder / "model"))
    spec = json.loads(
        json.dumps(TRAFFIC[kind]).replace("{dataset}", str(write_dataset(folder, 2 * requests)))
    )
    w = Workload.model_validate({**spec, "concurrency": concurrency, "requests": requests, "seed": 1})
    traffic = build_traffic(w, tokenizer, requests, api="completions", max_model_len=None, base_dir=folder)
    plan = LoadPlan(concurrency=concurrency, requests=requests)
    _, row = await timed_load(url, traffic.conversations, plan, {"X-Fake-Token-Delay": "0"})
    return {"kind": kind, "concurrency": concurrency, "requests": requests, **row}


def run_loop(job: Coroutine[Any, Any, dict[str, Any]], uvloop: bool) -> dict[str, Any]:
    if uvloop:
        import uvloop as uv

        return uv.run(job)
    return asyncio.run(job)


def main() -> None:
    ap = argparse.ArgumentParser(description="load generator client benchmark")
    ap.add_argument("--tokens", type=int, default=256, help="output tokens per request")
    ap.add_argument("--requests-per-stream", type=int, default=4)
    ap.add_argument(
        "--scenarios",
        nargs="+",
        default=["1", "64", "256", "256@10"],
        help="CONCURRENCY[@MS between a stream's chunks]; 0 ms = as fast as the server goes",
    )
    ap.add_argument("--uvloop", action="store_true", help="run client and server on uvloop")
    ap.add_argument("--traffic", nargs="*", default=list(TRAFFIC), choices=list(TRAFFIC))
    ap.add_argument("--traffic-concurrency", type=int, default=64)
    ap.add_argument("--traffic-requests", type=int, default=512)
    a = ap.parse_args()

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if len(cpus) > 1 else None
    proc, url = start_server(server_cpu, a.uvloop)
    pinned = pin(cpus[0]) if len(cpus) > 1 else False
    print(
        f"client pinned to core {cpus[0] if pinned else '-'}, server on core {server_cpu}, "
        f"{'uvloop' if a.uvloop else 'asyncio'}, {a.tokens} tokens/request, 1 token/chunk"
    )
    try:
        rows = []
        for sc in a.scenarios:
            conc, _, ms = sc.partition("@")
            job = scenario(url, int(conc), float(ms or 0) / 1e3, a.tokens, a.requests_per_stream)
            rows.append(run_loop(job, a.uvloop))
        kinds = []
        with tempfile.TemporaryDirectory() as tmp:
            write_tiny_model(Path(tmp) / "model")
            for kind in a.traffic:
                job = traffic_scenario(url, kind, a.traffic_concurrency, a.traffic_requests, Path(tmp))
                kinds.append(run_loop(job, a.uvloop))
    finally:
        proc.terminate()
        proc.wait(10)
    head = f"{'conc':>5} {'delay ms':>8} {'tok/s':>9} {'client CPU':>10} {'CPU µs/chunk':>12} {'max tok/s':>10} {'lag p50 µs':>10} {'lag p99 µs':>10}"
    print(head)
    for r in rows:
        print(
            f"{r['concurrency']:>5} {r['delay_ms']:>8g} {r['tok_s']:>9.0f} {r['cpu_frac']:>10.0%} {r['us_per_chunk']:>12.1f} "
            f"{1e6 / r['us_per_chunk']:>10.0f} {r['lag_p50_us']:>10.0f} {r['lag_p99_us']:>10.0f}"
        )
    if kinds:
        print(
            f"\n{'traffic':>12} {'conc':>5} {'requests':>8} {'tok/s':>9} {'client CPU':>10} {'CPU µs/chunk':>12} {'max tok/s':>10}"
        )
    for r in kinds:
        print(
            f"{r['kind']:>12} {r['concurrency']:>5} {r['requests']:>8} {r['tok_s']:>9.0f} {r['cpu_frac']:>10.0%} "
            f"{r['us_per_chunk']:>12.1f} {1e6 / r['us_per_chunk']:>10.0f}"
        )


if __name__ == "__main__":
    main()
