"""Shared pieces of the fault tests: a study file that serves tests/fakes/fake_vllm.py, the real `tuner` CLI
as a subprocess, the fake servers' event log, and checks that no server process is left.

Every fault here is injected for real: a SIGKILL of the real tuner process, a real engine process killed, a
real socket on the port, a real read-only or full file system. The fake only makes a server start in well
under a second; its faults are switched on with FAKE_VLLM_* variables (see its docstring), usually for one
server start only (``FAKE_VLLM_FAULT_ON=2``: the second server, i.e. trial 1's).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from tuner.search.record import FINISHED_STATES
from tuner.server.procs import pid_alive, process_cmdline, process_group_members

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_vllm.py"

#: a search space with a continuous flag, so two trials never share params by chance
SEARCH: dict[str, Any] = {
    "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
    "max-num-seqs": {"low": 2, "high": 64},
    "block-size": {"choices": [16, 32]},
}


@dataclass
class FakeStudy:
    """A study file on the fake server, with its database, run folder and the fakes' event log."""

    path: Path
    db: Path
    runs: Path
    status: Path
    name: str

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def study(self, storage: str | None = None) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=storage or self.url)

    def trials(self, storage: str | None = None) -> list[FrozenTrial]:
        return self.study(storage).get_trials(deepcopy=False)

    def events(self) -> list[dict[str, Any]]:
        if not self.status.exists():
            return []
        out = []
        for line in self.status.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_event(
        self, proc: subprocess.Popen[str] | None, timeout_s: float = 60, **match: Any
    ) -> dict[str, Any]:
        """The first event with these fields, waiting for it (fails if ``proc`` exits first)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for e in self.events():
                if all(e.get(k) == v for k, v in match.items()):
                    return e
            if proc is not None and proc.poll() is not None:
                _out, err = proc.communicate()
                raise AssertionError(f"tuner exited ({proc.returncode}) before {match}: {err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no event {match} in {timeout_s} s: {self.events()[-5:]}")
            time.sleep(0.02)

    def server_processes(self) -> list[int]:
        """Every process id a fake server of this study ran: API processes and engines."""
        pids: set[int] = set()
        for e in self.events():
            if e["event"] == "launched":
                pids.add(int(e["pid"]))
            if e["event"] == "engine":
                pids.add(int(e["engine_pid"]))
        return sorted(pids)

    def groups(self) -> list[int]:
        return sorted({int(e["pid"]) for e in self.events() if e["event"] == "launched"})

    def alive(self) -> list[int]:
        """The fake servers' processes still alive (any member of their groups included)."""
        left = {p for p in self.server_processes() if pid_alive(p)}
        for g in self.groups():
            left |= set(process_group_members(g))
        return sorted(left)


def write_study(
    tmp_path: Path,
    model: Path,
    *,
    name: str = "faults",
    n_trials: int = 3,
    server: dict[str, Any] | None = None,
    workload: dict[str, Any] | None = None,
    storage: str | None = None,
    **extra: Any,
) -> FakeStudy:
    status = tmp_path / "fake-events.jsonl"
    srv: dict[str, Any] = {
        "command": ["python", str(FAKE)],
        "args": {"max-model-len": 512},
        "env": {"FAKE_VLLM_STATUS": str(status)},
        "startup_timeout_s": 60,
        "stop_timeout_s": 5,
    }
    for k, v in (server or {}).items():
        srv[k] = {**srv[k], **v} if isinstance(v, dict) and isinstance(srv.get(k), dict) else v
    doc: dict[str, Any] = {
        "name": name,
        "model": str(model),
        "server": srv,
        "search": SEARCH,
        "workload": {
            "mode": "fixed",
            "input_tokens": 16,
            "output_tokens": 8,
            "concurrency": 2,
            "requests": 6,
            "warmup_requests": 2,
            **(workload or {}),
        },
        "slo": {"ttft_p99_ms": 5000},
        "n_trials": n_trials,
        "results_dir": str(tmp_path / "runs"),
        "storage": storage or f"sqlite:///{tmp_path / (name + '.db')}",
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return FakeStudy(path, tmp_path / f"{name}.db", tmp_path / "runs", status, name)


def tuner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_VLLM_", "TUNER_TEST_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def start_tuner(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """The real CLI in its own process (``python -m tuner ...``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or tuner_env(),
        cwd=cwd or ROOT,
    )


def run_tuner(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    proc = start_tuner(*args, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"tuner {args} ran past {timeout_s} s: {err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill9(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the real tuner process and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def by_state(trials: list[FrozenTrial], *states: TrialState) -> list[FrozenTrial]:
    return [t for t in trials if t.state in states]


def params_key(t: FrozenTrial) -> tuple[Any, ...]:
    return (bool(t.user_attrs.get("is_baseline")), tuple(sorted(t.params.items())))


def assert_study_whole(fs: FakeStudy, budget: int, storage: str | None = None) -> list[FrozenTrial]:
    """The budget is met (finished trials: COMPLETE, or PRUNED when failed), nothing RUNNING or queued, no
    configuration measured twice, trial numbers unique. Returns the trials."""
    trials = fs.trials(storage)
    assert not by_state(trials, TrialState.RUNNING, TrialState.WAITING), [(t.number, t.state) for t in trials]
    finished = by_state(trials, *FINISHED_STATES)
    assert len(finished) == budget, [(t.number, t.state, t.user_attrs.get("status")) for t in trials]
    keys = [params_key(t) for t in finished]
    assert len(keys) == len(set(keys)), keys
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == max(numbers) + 1
    return trials


@pytest.fixture
def fake_study(tmp_path: Path, tiny_model: Path) -> Iterator[Callable[..., FakeStudy]]:
    """Makes FakeStudy objects; at the end kills any fake server process a failing test left behind."""
    made: list[FakeStudy] = []

    def make(**kw: Any) -> FakeStudy:
        fs = write_study(tmp_path, tiny_model, **kw)
        made.append(fs)
        return fs

    yield make
    for fs in made:
        for p in fs.alive():
            cmd = " ".join(process_cmdline(p) or [])
            if "fake_vllm" in cmd or "fake-vllm-engine" in cmd:  # never a recycled pid
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
