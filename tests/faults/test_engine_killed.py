"""The engine dies under load: the trial is `crashed` with the log tail, and the study goes on to its budget.

With the fake (fast): the test itself SIGKILLs the fake's engine process while trial 1's load runs (its
third request, the first measured one, is held open so the kill lands mid-load); the API process then logs
vLLM's EngineDeadError, answers /health 503 for a second and exits, as vLLM does. A second variant kills
the whole server group at once. With real vLLM (marked vllm+slow): the EngineCore process of trial 0's
server is SIGKILLed once measured requests reach the server.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from tests.conftest import CPU_GMU
from tests.faults.conftest import FakeStudy, assert_study_whole, write_study
from tuner.config.spec import load_spec
from tuner.search.loop import run_study
from tuner.server.procs import process_cmdline, process_group_members, read_pidfiles

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def fault_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set FAKE_VLLM_* knobs in this process's environment (servers inherit it)."""

    def setenv(**kw: str) -> None:
        for k, v in kw.items():
            monkeypatch.setenv(k, v)

    return setenv


class Background:
    """Runs ``fn`` in a thread (the injector, beside the study in the main thread); keeps its error."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn()
            except BaseException as e:
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=30)
        assert self.error is None, self.error


@pytest.mark.parametrize("how", ["engine SIGKILL", "group SIGKILL", "server exits"])
def test_engine_killed_mid_load_is_crashed_and_study_goes_on(
    fake_study: Callable[..., FakeStudy], fault_env: Callable[..., None], how: str
) -> None:
    fs = fake_study(n_trials=3)
    fault_env(FAKE_VLLM_FAULT_ON="2")
    injector: Background | None = None
    if how == "engine SIGKILL":  # the test kills the engine while a measured request is in flight
        fault_env(FAKE_VLLM_HANG_REQUEST="3", FAKE_VLLM_DEATH_DELAY="3")

        def killer() -> None:
            fs.wait_event(None, event="request", index=2, n=3)  # trial 1 is under measured load
            os.kill(fs.wait_event(None, event="engine", index=2)["engine_pid"], signal.SIGKILL)

        injector = Background(killer)
    else:  # the server itself dies after its third completion (2 warm-up + 1 measured)
        fault_env(FAKE_VLLM_DIE_AFTER="3", FAKE_VLLM_DIE_HOW="group" if how == "group SIGKILL" else "exit")
    out = run_study(load_spec(fs.path))
    if injector is not None:
        injector.join()
    assert out.complete == 3 and out.stopped == "budget"

    trials = assert_study_whole(fs, budget=3)
    crashed = trials[1]
    assert crashed.state == TrialState.PRUNED and crashed.user_attrs["status"] == "crashed"
    assert crashed.user_attrs["feasible"] is False and crashed.constraints["failed"] == 1.0
    tail = crashed.user_attrs["log_tail"]
    assert tail and any("Started server process" in line for line in tail)
    assert fs.wait_event(None, event="die" if how != "engine SIGKILL" else "engine_dead", index=2)
    message = crashed.user_attrs["message"]
    if how == "engine SIGKILL":
        assert "EngineDeadError" in message and any("EngineDeadError" in line for line in tail)
    elif how == "server exits":
        assert "illegal memory access" in message
    else:
        assert message
    assert [t.user_attrs["status"] for t in trials if t.number != 1] == ["ok", "ok"]
    assert fs.alive() == []


# ------------------------------------------------------------------------------------------ real vLLM


def engine_core(api_pid: int) -> int | None:
    """The EngineCore process of a vLLM API server (a member of its group named so)."""
    for pid in process_group_members(api_pid):
        if pid == api_pid:
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if "EngineCore" in comm or "EngineCore" in " ".join(process_cmdline(pid) or []):
            return pid
    return None


@pytest.mark.vllm
@pytest.mark.timeout(1200)
def test_real_vllm_engine_core_killed_mid_load(
    tmp_path: Path, tiny_model: Path, vllm_command: list[str]
) -> None:
    fs = write_study(
        tmp_path,
        tiny_model,
        name="engine-kill",
        n_trials=2,
        server={
            "command": vllm_command,
            "args": {"max-model-len": 512, "gpu-memory-utilization": CPU_GMU},
            "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            "startup_timeout_s": 600,
            "stop_timeout_s": 20,
        },
        workload={"output_tokens": 64, "requests": 48, "concurrency": 2, "warmup_requests": 2},
        baseline=False,
        search={"max-num-seqs": {"low": 2, "high": 16}},
    )
    runtime = tmp_path / "runtime"
    seen: dict[str, Any] = {}

    def killer() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            records = read_pidfiles(runtime)
            if records:
                api = int(records[0][1]["pid"])
                log = Path(records[0][1]["log_path"])
                posts = len(re.findall(r"POST /v1/completions", log.read_text(errors="replace")))
                core = engine_core(api)
                if core is not None and posts >= 4:  # past the 2 warm-up requests
                    seen.update(posts=posts, api=api, killed=core)
                    os.kill(core, signal.SIGKILL)
                    return
            time.sleep(0.2)

    injector = Background(killer)
    out = run_study(load_spec(fs.path), runtime_dir=runtime)
    injector.join()
    assert "killed" in seen, seen
    assert out.complete == 2

    trials = assert_study_whole(fs, budget=2)
    first = trials[0]
    assert first.user_attrs["status"] == "crashed", (first.user_attrs["status"], first.user_attrs["message"])
    assert first.user_attrs["log_tail"], "the log tail is stored"
    assert re.search(r"EngineDead|EngineCore|died|exited", first.user_attrs["message"]), first.user_attrs
    assert trials[1].user_attrs["status"] == "ok", trials[1].user_attrs["message"]
    assert not process_group_members(seen["api"])
