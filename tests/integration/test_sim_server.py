"""``python -m tuner.sim`` as a process: health, tokenize, streamed completions (SSE as vLLM), /metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.studyfiles import SIM_SERVER, write_study_file

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sim_server(tiny_model: Path) -> Iterator[str]:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "tuner.sim",
        "--model",
        str(tiny_model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--sim-hardware",
        "cpu-2core",
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        "8",
        "--block-size",
        "32",
        "--sim-time-scale",
        "0.05",
        "--sim-startup-s",
        "0",
        "--served-model-name",
        "tiny",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"the simulator exited with {proc.returncode}:\n{out}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the simulator did not listen within 90 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[str]:
    """The SSE ``data:`` payloads of one streamed request, in order."""
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    events = [block for block in raw.split("\n\n") if block.strip()]
    assert all(e.startswith("data: ") for e in events), events[:3]
    return [e.removeprefix("data: ") for e in events]


def _parse_prometheus(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line (the exposition format parses line by line)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def test_sim_server_end_to_end(sim_server: str) -> None:
    asyncio.run(_exercise(sim_server))


async def _exercise(base: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/health") as r:
            assert r.status == 200
        async with s.get(f"{base}/v1/models") as r:
            models = await r.json()
            assert models["data"][0]["id"] == "tiny" and models["data"][0]["max_model_len"] == 2048
        prompt = " ".join(f"w{i}" for i in range(10, 60))
        async with s.post(f"{base}/tokenize", json={"prompt": prompt}) as r:
            tok = await r.json()
            assert tok["count"] == 51 == len(tok["tokens"]) and tok["max_model_len"] == 2048  # 50 words + BOS

        body = {
            "model": "tiny",
            "prompt": prompt,
            "max_tokens": 12,
            "stream": True,
            "ignore_eos": True,
            "stream_options": {"include_usage": True},
        }
        runs = await asyncio.gather(*(_stream(s, f"{base}/v1/completions", body) for _ in range(6)))
        for events in runs:
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            usage = chunks[-1]
            assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12
            assert usage["usage"]["prompt_tokens"] == 51
            content = chunks[:-1]
            assert all(
                c["object"] == "text_completion" and isinstance(c["choices"][0]["text"], str) for c in content
            )
            assert [c["choices"][0]["finish_reason"] for c in content][-1] == "length"
            assert all(c["choices"][0]["finish_reason"] is None for c in content[:-1])
            words = sum(len(c["choices"][0]["text"].split()) for c in content)
            assert words == 12
        again = await _stream(s, f"{base}/v1/completions", body)  # now the prompt's first block is cached
        assert json.loads(again[-2])["usage"]["completion_tokens"] == 12

        chat = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 5, "stream": True}
        events = await _stream(s, f"{base}/v1/chat/completions", chat)
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert "usage" not in chunks[-1] or chunks[-1].get("choices")  # no usage chunk unless asked

        async with s.post(f"{base}/v1/completions", json={**body, "max_tokens": 5000}) as r:
            assert r.status == 400 and "maximum context length is 2048" in (await r.text())

        async with s.get(f"{base}/metrics") as r:
            assert r.status == 200
            m = _parse_prometheus(await r.text())
        lab = 'engine="0",model_name="tiny"'
        assert m[f"vllm:generation_tokens_total{{{lab}}}"] == 7 * 12 + 5
        assert m[f"vllm:prompt_tokens_total{{{lab}}}"] >= 7 * 51
        assert m[f"vllm:time_to_first_token_seconds_count{{{lab}}}"] == 8
        assert m[f"vllm:inter_token_latency_seconds_count{{{lab}}}"] == 7 * 11 + 4
        assert m[f'vllm:time_to_first_token_seconds_bucket{{{lab},le="+Inf"}}'] == 8
        assert 0.0 <= m[f"vllm:kv_cache_usage_perc{{{lab}}}"] <= 1.0
        assert m[f"vllm:num_requests_running{{{lab}}}"] == 0
        hits = m[f"vllm:prefix_cache_hits_total{{{lab}}}"]
        assert hits >= 32 and hits % 32 == 0  # whole blocks (32 tokens) of the repeated prompt
        assert m[f"vllm:prefix_cache_queries_total{{{lab}}}"] >= 7 * 51
        assert f"vllm:num_preemptions_total{{{lab}}}" in m
        assert any(k.startswith("vllm:cache_config_info{") for k in m)


@pytest.mark.slow
def test_tuner_run_study_against_the_simulator(tiny_model: Path, tmp_path: Path) -> None:
    """A whole ``tuner run`` where only ``server.command`` differs from a real study: trials start the
    simulator, measure it, and a refused block size is recorded as a failed configuration."""
    import optuna

    from tuner.cli.main import main as tuner_main
    from tuner.config.paths import default_storage
    from tuner.config.spec import load_spec

    study = {
        "name": "sim-e2e",
        "model": str(tiny_model),
        "server": SIM_SERVER,
        "search": {
            "max-num-seqs": {"low": 2, "high": 32, "log": True},
            "block-size": {"choices": [32, 16]},  # 16: "No valid attention backend" on the CPU profile
        },
        "workload": {
            "input_tokens": 64,
            "output_tokens": 16,
            "requests": 16,
            "warmup_requests": 2,
            "capacity": {"levels": [1, 4]},
        },
        "slo": {"ttft_p99_ms": 100, "itl_p99_ms": 20},  # simulated 5 s / 1 s at time scale 0.02
        "objectives": ["maximize output_throughput"],
        "baseline": {"gpu-memory-utilization": 0.3},
        "n_trials": 4,
        "seed": 1,
    }
    path = write_study_file(tmp_path, study)
    assert tuner_main(["run", str(path)]) == 0
    trials = optuna.load_study(study_name="sim-e2e", storage=default_storage(load_spec(path))).get_trials()
    # a configuration that failed (invalid_config) is told PRUNED, without values
    done = [
        t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(done) >= 4
    assert any(t.values and t.values[0] > 0 for t in done)
