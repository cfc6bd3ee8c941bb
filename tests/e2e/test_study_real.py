"""Real studies on the CPU build of vLLM: a short study to the end, and a kill -9 under load then resume.

These are the product's promises, checked with real servers: trial 0 is vLLM's defaults, the database is
plain Optuna, nothing finished is lost or re-run after a kill -9, and no vLLM process is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.conftest import CPU_GMU
from tests.studyfiles import real_vllm_study, tuner_cli
from tuner.search.prior import stored_prediction, warm_start_rank

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def write_study(
    tmp_path: Path, model: Path, command: list[str], name: str, n_trials: int, **extra: Any
) -> Path:
    return real_vllm_study(
        tmp_path,
        model,
        command,
        name,
        {"max-model-len": 512},
        baseline={"gpu-memory-utilization": CPU_GMU},  # the CPU build's default (0.92) cannot start here
        search={
            "gpu-memory-utilization": {"low": 0.05, "high": CPU_GMU},
            "max-num-seqs": {"low": 2, "high": 32, "log": True},
            "block-size": {"choices": [32, 64]},
        },
        workload={
            "input_tokens": 64,
            "output_tokens": 16,
            "requests": 16,
            "warmup_requests": 2,
            "capacity": {"start": 2, "factor": 2, "max_level": 8, "requests_per_step": 12},
        },
        slo={"ttft_p99_ms": 4000, "itl_p99_ms": 800},
        n_trials=n_trials,
        **extra,
    )


def tuner(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return tuner_cli(*args, timeout=timeout)


def vllm_processes(model: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if str(model) in ln and "pytest" not in ln and " ps " not in ln]


def test_short_real_study(tmp_path: Path, tiny_model: Path, vllm_command: list[str]) -> None:
    # warm-started from the simulator's CPU profile (the tiny model's config.json is its shape): its best
    # configuration is trial 1, and every trial stores the simulator's prediction beside its measurement
    study = write_study(
        tmp_path,
        tiny_model,
        vllm_command,
        "real-study",
        n_trials=4,
        prior={"sim": True, "trials": 30, "top": 1},
    )
    proc = tuner("run", str(study))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "warm start" in proc.stdout + proc.stderr

    storage = f"sqlite:///{tmp_path / 'real-study.db'}"
    s = optuna.load_study(study_name="real-study", storage=storage)  # plain Optuna opens it
    trials = s.get_trials(deepcopy=False)
    # a configuration that failed (e.g. invalid_config) is told PRUNED, without values
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = [t for t in trials if t.state in finished]
    assert len(done) == 4, [(t.number, t.state, t.user_attrs.get("status")) for t in trials]
    t0 = trials[0]
    assert t0.number == 0 and t0.params == {} and t0.user_attrs.get("is_baseline")
    statuses = [t.user_attrs.get("status") for t in done]
    assert statuses.count("ok") >= 2, statuses
    ok = [t for t in done if t.user_attrs.get("status") == "ok"]
    assert all(t.values[0] > 0 for t in ok)
    assert [warm_start_rank(t) for t in trials[:3]] == [None, 1, None]
    assert all(stored_prediction(t) is not None for t in done), [t.user_attrs for t in done]
    status = tuner("status", str(study))
    assert status.returncode == 0, status.stderr
    assert "simulator's prediction error" in status.stdout, status.stdout  # >= 2 trials measured ok

    pareto = tuner("pareto", str(study), "--format", "json")
    assert pareto.returncode == 0, pareto.stderr
    front = json.loads(pareto.stdout)
    assert front and all({"trial", "params", "objectives", "metrics", "slo"} <= set(row) for row in front)

    best = tuner("best", str(study), "--export", "cmd")
    assert best.returncode == 0, best.stderr
    assert "serve" in best.stdout and str(tiny_model) in best.stdout
    assert not vllm_processes(tiny_model)


def _wait_for_load(runs: Path, minimum_trial: int, deadline: float) -> None:
    """Until a trial numbered >= minimum_trial has a server answering completions."""
    while time.time() < deadline:
        for log in runs.glob("**/*.server.log"):
            num = "".join(ch for ch in log.parent.name if ch.isdigit())  # runs/trial-0001/...
            if num and int(num) >= minimum_trial and "/v1/completions" in log.read_text(errors="replace"):
                return
        time.sleep(0.5)
    raise AssertionError(f"no trial >= {minimum_trial} reached the load phase in time")


def test_kill_9_under_load_then_resume(tmp_path: Path, tiny_model: Path, vllm_command: list[str]) -> None:
    study = write_study(tmp_path, tiny_model, vllm_command, "killed", n_trials=3)
    with open(tmp_path / "tuner.log", "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "tuner", "run", str(study)], stdout=log, stderr=log)
    try:
        _wait_for_load(tmp_path / "runs", minimum_trial=1, deadline=time.time() + 900)
        os.kill(p.pid, signal.SIGKILL)  # the tuner only: its server lives on in its own session
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    before = optuna.load_study(study_name="killed", storage=storage).get_trials(deepcopy=False)
    finished_before = {t.number: t.values for t in before if t.state == optuna.trial.TrialState.COMPLETE}
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in before)

    proc = tuner("resume", str(study))
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = optuna.load_study(study_name="killed", storage=storage).get_trials(deepcopy=False)
    states = [t.state for t in after]
    assert optuna.trial.TrialState.RUNNING not in states
    # finished: measured (COMPLETE) or a configuration that failed (PRUNED: e.g. a memory fraction too small
    # for this host's NUMA node, invalid_config on a machine with two 12 GiB nodes)
    done = [t for t in after if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 3
    for n, values in finished_before.items():  # nothing finished was lost or re-run
        assert after[n].values == values
    params_done = [json.dumps(t.params, sort_keys=True) for t in done if not t.user_attrs.get("is_baseline")]
    assert len(params_done) == len(set(params_done))
    interrupted = [t for t in after if t.state == optuna.trial.TrialState.FAIL]
    assert interrupted and all(t.user_attrs.get("interrupted") for t in interrupted)
    requeued = interrupted[0].params
    assert any(t.params == requeued for t in done)  # its params ran again after resume
    assert not vllm_processes(tiny_model)
