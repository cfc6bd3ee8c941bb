"""Refined capacity on the real CPU build of vLLM: one server, measured twice through ``run_trial(url=...)``.

First a probe (the ladder alone, levels 1 and 32, no binding SLO) gives the server's TTFT p90 at both
ends; then the same server is measured with a TTFT p90 limit halfway between them, so the SLO boundary lies
inside (1, 32), and refinement must narrow that bracket by bisection: more steps than the ladder's two,
integer concurrencies strictly inside it, and a final bracket much narrower than (1, 32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CPU_GMU
from tuner.config.argv import build_plan
from tuner.config.spec import StudySpec, spec_from_dict
from tuner.measure.capacity import meets
from tuner.measure.trial import run_trial
from tuner.server.process import start_server_with_retry

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _spec(model: Path, command: list[str], slo: dict[str, float], capacity: dict[str, Any]) -> StudySpec:
    return spec_from_dict(
        {
            "name": "capacity-real",
            "model": str(model),
            "server": {
                "command": command,
                "args": {"max-model-len": 512, "gpu-memory-utilization": CPU_GMU, "max-num-seqs": 32},
            },
            "search": {"block-size": {"choices": [32]}},
            "workload": {
                "input_tokens": 64,
                "output_tokens": 8,
                "requests": 64,
                "warmup_requests": 4,
                "capacity": capacity,
            },
            "slo": slo,
        }
    )


def test_refinement_narrows_the_bracket_on_real_vllm(
    tmp_path: Path, tiny_model: Path, vllm_command: list[str]
) -> None:
    probe_spec = _spec(
        tiny_model, vllm_command, {"ttft_p90_ms": 1e6}, {"levels": [1, 32], "requests_per_step": 64}
    )
    plan = build_plan(probe_spec, {}, port=0)
    with start_server_with_retry(
        lambda port: build_plan(probe_spec, {}, port=port).argv,
        log_path=tmp_path / "server.log",
        env=plan.env,
        runtime_dir=tmp_path / "runtime",
        startup_timeout_s=600,
    ) as server:
        probe = run_trial(probe_spec, {}, log_dir=tmp_path, runtime_dir=tmp_path / "runtime", url=server.url)
        assert probe.status == "ok", probe.message
        low, high = (s.ttft_ms.p90 for s in probe.steps)
        print(f"TTFT p90 at concurrency 1: {low:.1f} ms, at 32: {high:.1f} ms")
        assert high > 2 * low  # 32 concurrent prefills queue on 2 cores
        limit = (low + high) / 2
        spec = _spec(
            tiny_model,
            vllm_command,
            {"ttft_p90_ms": limit},
            {"levels": [1, 32], "requests_per_step": 64, "resolution": 0.1, "max_steps": 8},
        )
        result = run_trial(spec, {}, log_dir=tmp_path, runtime_dir=tmp_path / "runtime", url=server.url)
    assert result.status == "ok", result.message
    cap = result.capacity
    print(cap)
    levels = cap["levels"]
    bracket = cap["bracket"]
    assert levels[:2] == [1, 32] and len(levels) > 2  # refined beyond the ladder
    assert all(1 < lv < 32 and lv == int(lv) for lv in levels[2:])
    assert bracket["passing"] is not None and bracket["failing"] is not None
    assert bracket["failing"] - bracket["passing"] < 31 / 4  # at least two halvings of (1, 32)
    assert bracket["within"] or cap["stop"].startswith("step budget")
    # the score: the passing step with the most throughput (at or below the bracket's passing level; a
    # lower level may measure more when the machine is busy)
    scored = result.steps[result.scored_step or 0]
    met = [meets(s, {"ttft_p90": limit}, spec.workload.max_failed_fraction) for s in result.steps]
    failing = {s.load["concurrency"] for s, ok in zip(result.steps, met, strict=True) if not ok}
    passing = [
        s for s, ok in zip(result.steps, met, strict=True) if ok and s.load["concurrency"] not in failing
    ]
    assert scored in passing and scored.load["concurrency"] <= bracket["passing"]
    assert scored.output_throughput_tok_s == max(s.output_throughput_tok_s for s in passing)
    assert cap["load_s"] > 0
