"""kill -9 of the real `tuner` process in each phase of a trial, each time followed by `tuner resume`.

One study, one chain of real processes (a chain, not one test per phase, to keep the suite short: every
`tuner` process pays a few seconds of imports). Trial 0 finishes; then each process is SIGKILLed while a
new trial is in one phase, and the next process resumes:

* starting server — the fake takes 60 s to listen: kill once it was launched (its engine runs);
* warm-up — the first warm-up request never answers: kill once it arrived;
* load — the first measured request (after the 2 warm-up requests) never answers: kill once it arrived;
* stopping — the fake takes 60 s to shut down after SIGTERM: kill once it got SIGTERM;
* saving — a driver (tests/fakes/pause_at_saving.py: the run path with a reporter injected) sleeps once
  the loop reports the first result attribute of trial N written: kill then.

The fault is switched on for one server start only (FAKE_VLLM_FAULT_ON: the new trial's server; the first
server of a resumed process re-runs the trial the previous process lost). After each kill the trial is
RUNNING with a dead worker and every finished trial is intact; the next process stops what the dead one left
(the fake's engine child outlives its API process, as vLLM's EngineCore can), marks the trial interrupted
and runs its params again. At the end: the budget is met, no finished trial lost or duplicated, nothing
RUNNING, no fake process left.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from tests.faults.conftest import (
    ROOT,
    FakeStudy,
    assert_study_whole,
    by_state,
    kill9,
    run_tuner,
    start_tuner,
    tuner_env,
    wait_until,
)
from tuner.server.procs import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

#: phase: (tuner's environment, the event of the faulty server that proves the phase)
PHASES: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "starting": ({"FAKE_VLLM_START_DELAY": "60"}, {"event": "engine"}),
    "warm-up": ({"FAKE_VLLM_HANG_REQUEST": "1"}, {"event": "request", "n": 1}),
    "load": ({"FAKE_VLLM_HANG_REQUEST": "3"}, {"event": "request", "n": 3}),
    "stopping": ({"FAKE_VLLM_STOP_DELAY": "60"}, {"event": "sigterm"}),
    "saving": ({}, {}),
}


def paused(marker: Path, proc: subprocess.Popen[str]) -> bool:
    return marker.exists() or proc.poll() is not None


def start_paused_at_saving(command: str, fs: FakeStudy, number: int, marker: Path) -> subprocess.Popen[str]:
    """The run path in its own process, stopping while trial ``number``'s result is half stored."""
    driver = ROOT / "tests" / "fakes" / "pause_at_saving.py"
    return subprocess.Popen(
        [sys.executable, str(driver), command, str(fs.path), str(number), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tuner_env(),
        cwd=ROOT,
    )


def launched(fs: FakeStudy) -> int:
    return sum(e["event"] == "launched" for e in fs.events())


def test_kill_9_in_each_phase_then_resume(fake_study: Callable[..., FakeStudy], tmp_path: Path) -> None:
    budget = len(PHASES) + 1  # trial 0, then one re-run per killed trial
    fs = fake_study(n_trials=budget)
    marker = tmp_path / "paused"
    finished: dict[int, Any] = {}  # number -> (values, user attrs) of every COMPLETE trial seen
    before_alive: list[int] = []  # fake processes alive right after the previous kill
    command = "run"
    for cycle, (phase, (knobs, proof)) in enumerate(PHASES.items()):
        # the faulty server: the first new trial's (cycle 0: after trial 0; later: after the re-run)
        index = launched(fs) + 2
        number = 2 * cycle + 1  # trial numbers: 0, 1 | 2 (re-run of 1), 3 | 4 (re-run of 3), 5 | ...
        if phase == "saving":
            proc = start_paused_at_saving(command, fs, number, marker)
            fs.wait_event(proc, event="exit", index=index)  # the trial's server is gone ...
            assert wait_until(functools.partial(paused, marker, proc), 60)
            assert marker.read_text() == "saving", proc.communicate()  # ... and tuner is storing its result
        else:
            proc = start_tuner(command, str(fs.path), env=tuner_env(FAKE_VLLM_FAULT_ON=str(index), **knobs))
            fs.wait_event(proc, index=index, **proof)
        if cycle:
            # the resumed process swept what the previous one left before it started a server
            assert not [p for p in before_alive if pid_alive(p)], f"{phase}: left by the last kill"
        kill9(proc)

        trials = fs.trials()
        running = by_state(trials, TrialState.RUNNING)
        assert [t.number for t in running] == [number], (phase, [(t.number, t.state) for t in trials])
        if phase == "saving":
            assert running[0].user_attrs.get("status") == "ok"  # written before the kill, never told
        for t in by_state(trials, TrialState.COMPLETE):
            if t.number in finished:
                assert (t.values, t.user_attrs) == finished[t.number], f"{phase}: trial {t.number} changed"
            finished[t.number] = (t.values, t.user_attrs)
        assert len(finished) == cycle + 1, phase
        before_alive = [p for p in fs.server_processes() if pid_alive(p)]
        if phase in ("starting", "warm-up", "load"):
            assert before_alive, f"{phase}: the engine child should outlive the killed tuner"
        command = "resume"

    done = run_tuner("resume", str(fs.path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{budget}/{budget} trials finished" in done.stderr
    assert fs.alive() == [], f"fake server processes left: {fs.alive()}"

    trials = assert_study_whole(fs, budget=budget)
    for t in by_state(trials, TrialState.COMPLETE):
        if t.number in finished:
            assert (t.values, t.user_attrs) == finished[t.number]
    lost = by_state(trials, TrialState.FAIL)
    assert [t.number for t in lost] == [2 * c + 1 for c in range(len(PHASES))]
    for t in lost:
        assert t.user_attrs["interrupted"] is True
        rerun = [r for r in trials if r.user_attrs.get("requeued_from") == t.number]
        assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE, t.number
        assert rerun[0].params == t.params and rerun[0].user_attrs["status"] == "ok"
