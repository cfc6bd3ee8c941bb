"""Resume and concurrency with real processes and a fake trial function: a worker that dies mid-trial
(os._exit, kill -9, a second Ctrl-C) is repaired by the next run, and two workers share one SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.fakes.trial_fn import Fake
from tests.studyfiles import write_study_file
from tuner.config.paths import default_storage
from tuner.config.spec import StudySpec, load_spec
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.search.loop import run_study
from tuner.search.storage import open_storage
from tuner.search.study import StudyHandle
from tuner.search.workers import repair_orphans, this_worker, trial_is_orphan

ROOT = Path(__file__).resolve().parents[2]

#: a worker process: run_study with a fake trial function whose behaviour the test picks
WORKER = r"""
import json, math, os, sys, time
sys.path.insert(0, {root!r})
from tuner.errors import TunerError
from tuner.measure.metrics import Summary
from tuner.config.spec import load_spec
from tuner.search.loop import run_study
from tuner.measure.result import TrialResult

study_file, mode, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
folder = os.path.dirname(study_file)
calls = 0

def mark(name):
    open(os.path.join(folder, name), "w").close()

def fake(spec, params, *, log_dir, runtime_dir, reporter=None, best_so_far=None):
    global calls
    i = calls
    calls += 1
    with open(os.path.join(folder, "calls.jsonl"), "a") as f:
        f.write(json.dumps({{"pid": os.getpid(), "params": dict(params)}}) + "\n")
    if i == at and mode == "exit":
        os._exit(9)
    if i == at and mode == "hang":
        mark("started")
        time.sleep(120)
    if i == at and mode == "slow-stop":
        mark("started")
        try:
            time.sleep(120)
        except KeyboardInterrupt:
            mark("stopping")  # a server that takes long to stop
            time.sleep(120)
    if mode == "sleep":
        time.sleep(0.05)
    seqs = float(params.get("max-num-seqs", 16))
    m = {{"output_throughput_tok_s": 10 * seqs, "ttft_ms": {{"p99": 30.0 * seqs}}, "completed": 4}}
    return TrialResult(status="ok", summary=Summary.from_dict(m), flags=dict(params))

try:
    out = run_study(load_spec(study_file), trial_fn=fake)
except TunerError as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
print(json.dumps({{"told": out.told, "complete": out.complete}}))
"""


def write_spec(tmp_path: Path, n_trials: int) -> StudySpec:
    data = {
        "name": "resume",
        "model": "./m",
        "search": {
            "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
            "max-num-seqs": {"low": 2, "high": 64},
        },
        "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
        "slo": {"ttft_p99_ms": 1500},
        "n_trials": n_trials,
    }
    path = write_study_file(tmp_path, data)
    (tmp_path / "worker.py").write_text(WORKER.format(root=str(ROOT)))
    return load_spec(path)


def start(tmp_path: Path, mode: str, at: int = -1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "resume.yaml"), mode, str(at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.05)


def measured(_call: int, params: Mapping[str, Any]) -> TrialResult:
    """The workers' measurement (:data:`WORKER`), for the trial function of the resuming run."""
    seqs = float(params.get("max-num-seqs", 16))
    m = {"output_throughput_tok_s": 10 * seqs, "ttft_ms": {"p99": 30.0 * seqs}, "completed": 4}
    return TrialResult(status="ok", summary=Summary.from_dict(m), flags=dict(params))


def trials_of(spec: StudySpec) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=spec.name, storage=default_storage(spec)).trials


def key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def check_resumed(spec: StudySpec, lost_params: dict[str, Any], before: set[Any], resumed: Fake) -> None:
    """After a resume: the budget is met, nothing is RUNNING or queued, the lost params ran again first,
    and no configuration that had finished ran again."""
    trials = trials_of(spec)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == spec.n_trials
    assert resumed.calls[0] == lost_params
    assert not before & {key(c) for c in resumed.calls}
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert len(lost) == 1 and lost[0].user_attrs["interrupted"] is True


def finished_params(spec: StudySpec) -> set[Any]:
    return {key(t.params) for t in trials_of(spec) if t.state == TrialState.COMPLETE}


@pytest.mark.parametrize("how", ["os._exit", "kill -9"])
def test_resume_after_the_worker_dies(tmp_path: Path, how: str) -> None:
    spec = write_spec(tmp_path, n_trials=6)
    if how == "os._exit":
        proc = start(tmp_path, "exit", at=3)
        assert proc.wait(timeout=60) == 9
    else:
        proc = start(tmp_path, "hang", at=3)
        wait_for(tmp_path / "started", proc)
        proc.kill()
        proc.wait(timeout=10)
    running = [t for t in trials_of(spec) if t.state == TrialState.RUNNING]
    assert [t.number for t in running] == [3]
    before = finished_params(spec)
    assert len(before) == 3
    lost_params = dict(running[0].params)

    resumed = Fake(measured)
    out = run_study(spec, trial_fn=resumed, must_exist=True)
    assert out.repaired == [3] and out.complete == 6
    check_resumed(spec, lost_params, before, resumed)


def test_second_ctrl_c_exits_at_once_and_stays_resumable(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=4)
    proc = start(tmp_path, "slow-stop", at=2)
    wait_for(tmp_path / "started", proc)
    proc.send_signal(signal.SIGINT)
    wait_for(tmp_path / "stopping", proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - t0 < 5
    assert "stopped at once" in proc.communicate()[1]
    running = [t for t in trials_of(spec) if t.state == TrialState.RUNNING]
    assert [t.number for t in running] == [2]
    before = finished_params(spec)

    resumed = Fake(measured)
    run_study(spec, trial_fn=resumed, must_exist=True)
    check_resumed(spec, dict(running[0].params), before, resumed)


def test_two_workers_share_one_sqlite_file(tmp_path: Path) -> None:
    budget = 16
    spec = write_spec(tmp_path, n_trials=budget)
    workers = [start(tmp_path, "sleep"), start(tmp_path, "sleep")]
    results = [w.communicate(timeout=120) for w in workers]
    for w, (_out, err) in zip(workers, results, strict=True):
        assert w.returncode == 0, err
        assert "locked" not in err
    told = [json.loads(out)["told"] for out, _ in results]
    assert sum(told) == budget and all(n > 0 for n in told), told

    trials = trials_of(spec)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == max(numbers) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get("surplus") for t in trials if t.state == TrialState.FAIL)
    assert sum(bool(t.user_attrs.get("is_baseline")) for t in complete) == 1
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == budget
    assert len({key(c["params"]) for c in calls}) == budget  # no configuration ran twice
    assert len({c["pid"] for c in calls}) == 2
    assert os.path.getsize(tmp_path / "resume.db") > 0


def _orphan_candidate(spec: StudySpec, worker: dict[str, Any], heartbeat_at: float) -> StudyHandle:
    storage = open_storage(default_storage(spec))
    study = optuna.load_study(study_name=spec.name, storage=storage)
    trial = study.ask()
    trial.suggest_float("gpu-memory-utilization", 0.1, 0.5)
    trial.suggest_int("max-num-seqs", 2, 64)
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("heartbeat_at", heartbeat_at)
    return StudyHandle.load(study, storage)


def test_liveness_rules(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=1)
    run_study(spec, trial_fn=Fake(measured))
    me = this_worker()
    now = time.time()
    cases = {
        "other host, stale heartbeat": ({**me.to_dict(), "host": "elsewhere"}, now - 3600, True),
        "other host, fresh heartbeat": ({**me.to_dict(), "host": "elsewhere"}, now, False),
        "same host, other boot": ({**me.to_dict(), "boot_id": "another-boot"}, now, True),
        "same host, dead pid": ({**me.to_dict(), "pid": 2**22 + 12345}, now, True),
        "same host, recycled pid": ({**me.to_dict(), "pid": os.getppid(), "pid_start": 1}, now, True),
        "this process, no loop runs it": (me.to_dict(), now, True),
    }
    for name, (worker, beat, orphan) in cases.items():
        handle = _orphan_candidate(spec, worker, beat)
        running = handle.study.get_trials(states=(TrialState.RUNNING,))[-1]
        assert trial_is_orphan(running, now=now, grace_s=600, me=me) is orphan, name
        repaired = repair_orphans(handle, spec, grace_s=600, me=me)
        assert repaired == ([running.number] if orphan else []), name
        if not orphan:
            handle.study.tell(running.number, state=TrialState.FAIL)
    requeued = [t for t in trials_of(spec) if "requeued_from" in t.user_attrs]
    assert len(requeued) == sum(orphan for _w, _b, orphan in cases.values())
