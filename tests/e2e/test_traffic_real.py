"""Each kind of traffic (issue 12) against the CPU build of vLLM on the tiny model, through the real CLI.

* a length distribution (lognormal prompts, uniform outputs), `tuner run` in fixed mode: the stored traffic
  summary is the traffic's own, and the server's ``usage`` counts of the measured requests add up to exactly
  the prompt and output tokens the traffic planned for them (its ``/metrics`` generation counter too);
* a short multi-turn chat workload (3 turns, a shared system prompt), `tuner run` in capacity mode: every
  stored step has its per-turn TTFT/ITL, and later turns reach the server carrying their history;
* a JSONL dataset and a replayed trace (`tuner measure`, fixed mode, a few requests): every line is sent
  once, with the token counts the file (or the tokenizer) says.

The expected figures come from tuner's own traffic builder (:func:`tuner.load.traffic.build_traffic`), the
same rule a trial uses: the measured requests are the conversations after the warm-up's (fixed mode sends
each planned conversation once). One vLLM at a time; about 4 minutes on 2 idle cores.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.conftest import CPU_GMU
from tests.studyfiles import real_vllm_study, tuner_cli
from tuner.config.spec import load_spec
from tuner.load.prompts import load_tokenizer
from tuner.load.traffic import Traffic, build_traffic
from tuner.measure.steps import conversations_needed, mean_turns
from tuner.search.record import read

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MAX_MODEL_LEN = 512


def write_study(tmp_path: Path, model: Path, command: list[str], name: str, workload: dict[str, Any]) -> Path:
    return real_vllm_study(
        tmp_path,
        model,
        command,
        name,
        {"max-model-len": MAX_MODEL_LEN, "gpu-memory-utilization": CPU_GMU},
        search={"max-num-seqs": {"low": 2, "high": 32, "log": True}},
        workload=workload,
        slo={"ttft_p90_ms": 8000},
        n_trials=1,
    )


def tuner(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return tuner_cli(*args, timeout=timeout)


def planned(study: Path) -> Traffic:
    """The traffic a trial of ``study`` builds (tuner's own rule)."""
    spec = load_spec(study)
    w = spec.workload
    base = study.parent
    count = conversations_needed(spec, mean_turns(w, base))
    return build_traffic(
        w, load_tokenizer(spec.model), count, api=w.api, max_model_len=MAX_MODEL_LEN, base_dir=base
    )


def measured_part(traffic: Traffic, warmup: int) -> tuple[int, int]:
    """Prompt and output tokens of the conversations a fixed-mode run measures (single-turn traffic)."""
    convs = traffic.conversations[warmup:]
    return sum(c.turns[0].prompt.n_tokens for c in convs), sum(c.turns[0].output_tokens for c in convs)


def only_trial(study: Path, name: str) -> Any:
    s = optuna.load_study(study_name=name, storage=f"sqlite:///{study.parent / (name + '.db')}")
    (t,) = s.get_trials(deepcopy=False)
    rec = read(t)
    assert rec.status == "ok", (rec.status, rec.message, rec.log_tail[-20:])
    assert rec.result is not None
    return rec.result


def test_a_length_distribution_study(tmp_path: Path, tiny_model: Path, vllm_command: list[str]) -> None:
    workload = {
        "mode": "fixed",
        "input_tokens": {"dist": "lognormal", "median": 40, "sigma": 0.7, "min": 8, "max": 300},
        "output_tokens": {"dist": "uniform", "low": 4, "high": 24},
        "concurrency": 4,
        "requests": 24,
        "warmup_requests": 2,
        "seed": 3,
    }
    study = write_study(tmp_path, tiny_model, vllm_command, "dist", workload)
    proc = tuner("run", str(study))
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = only_trial(study, "dist")
    traffic = planned(study)
    assert dict(result.traffic) == json.loads(json.dumps(traffic.summary()))  # what was sent, stored
    assert result.traffic["kind"] == "distribution" and result.traffic["requests"] == 26
    ins = result.traffic["input_tokens"]
    assert ins["min"] < ins["p50"] < ins["max"]  # a spread, not one length
    m = result.metrics
    prompt_total, output_total = measured_part(traffic, warmup=2)
    assert m["completed"] == 24 and m["failed"] == 0
    assert m["prompt_tokens_total"] == prompt_total  # as the server counted them (usage)
    assert m["generated_tokens_total"] == output_total  # max_tokens + ignore_eos, to the token
    agree = result.server_metrics["agreement"]
    assert agree["server_generation_tokens"] == output_total  # vLLM's /metrics counter
    assert agree["server_requests"] == 24


def test_a_multi_turn_chat_study(tmp_path: Path, tiny_model: Path, vllm_command: list[str]) -> None:
    workload = {
        "api": "chat",
        "shared_prefix_tokens": 16,
        "input_tokens": {"dist": "uniform", "low": 48, "high": 64},  # the first turn: 16 + a chat template
        "output_tokens": 8,
        "sessions": {"turns": 3, "think_time_s": 0.05},
        "requests": 12,
        "warmup_requests": 3,
        "capacity": {"levels": [2, 4], "requests_per_step": 12, "resolution": None},
    }
    study = write_study(tmp_path, tiny_model, vllm_command, "turns", workload)
    proc = tuner("run", str(study))
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = only_trial(study, "turns")
    t = result.traffic
    assert t["kind"] == "distribution" and t["turns"] == {"mean": 3.0, "max": 3} and t["dropped"] == 0
    assert len(result.steps) == 2
    smallest_first = t["input_tokens"]["min"]
    for step in result.steps:
        turns = step["turns"]
        assert {"1", "2", "3", "later"} <= set(turns), turns
        assert turns["later"]["count"] == turns["2"]["count"] + turns["3"]["count"]
        assert sum(turns[k]["count"] for k in ("1", "2", "3")) == step["completed"] > 0
        for k in ("1", "later"):
            assert turns[k]["ttft_ms"]["p50"] > 0
        seen = step["input_tokens"]
        # a first turn is at least the smallest planned prompt; a third (a third of the requests) carries
        # two earlier prompts and their replies
        assert seen["p50"] >= smallest_first
        assert seen["p90"] >= 3 * smallest_first + 2 * 8


def test_a_jsonl_dataset_and_a_trace(tmp_path: Path, tiny_model: Path, vllm_command: list[str]) -> None:
    words = [f"w{i}" for i in range(5, 400)]
    outputs = [4 + i for i in range(8)]
    lines = [
        {"prompt": " ".join(words[i : i + 10 + 7 * i]), "output_tokens": n} for i, n in enumerate(outputs)
    ]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ds = {"mode": "fixed", "dataset": {"path": "prompts.jsonl", "format": "jsonl"}, "concurrency": 3,
          "requests": 8, "warmup_requests": 0}  # fmt: skip
    study = write_study(tmp_path, tiny_model, vllm_command, "jsonl", ds)
    proc = tuner("measure", str(study), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    traffic = planned(study)
    assert out["traffic"]["kind"] == "dataset:jsonl" and out["traffic"]["requests"] == 8
    m = out["metrics"]
    assert m["completed"] == 8
    assert (m["prompt_tokens_total"], m["generated_tokens_total"]) == measured_part(traffic, warmup=0)
    assert m["generated_tokens_total"] == sum(outputs)

    rows = [(20 + 9 * i, 3 + i % 4, round(0.15 * i, 2)) for i in range(10)]
    (tmp_path / "log.csv").write_text(
        "t,input_tokens,output_tokens\n" + "".join(f"{t},{a},{b}\n" for a, b, t in rows)
    )
    trace = {"mode": "fixed", "dataset": {"path": "log.csv", "format": "lengths"}, "arrivals": {"kind": "trace",
             "scale": 2}, "requests": 10, "warmup_requests": 0}  # fmt: skip
    study = write_study(tmp_path, tiny_model, vllm_command, "trace", trace)
    proc = tuner("measure", str(study), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    assert out["traffic"]["arrivals"] == "trace" and out["traffic"]["requests"] == 10
    m = out["metrics"]
    assert m["completed"] == 10
    assert m["prompt_tokens_total"] == sum(a for a, _, _ in rows)  # exact lengths from the log
    assert m["generated_tokens_total"] == sum(b for _, b, _ in rows)
