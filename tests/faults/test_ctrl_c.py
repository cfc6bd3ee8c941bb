"""Ctrl-C (a real SIGINT to the real `tuner run` process) during trial 1's measured load.

* Once: a clean stop — exit 130, the server's whole group stopped by tuner itself (nothing for a sweep),
  trial 1 FAIL ``interrupted`` and its params queued again; `tuner resume` finishes the budget.
* Twice (the second while the server takes long to stop): tuner leaves at once — exit 130 within seconds,
  the server group SIGKILLed on the way out — and `tuner resume` repairs trial 1 and finishes the budget.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from optuna.trial import TrialState

from tests.faults.conftest import FakeStudy, assert_study_whole, by_state, run_tuner, start_tuner, tuner_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def server_gone(fs: FakeStudy, index: int) -> bool:
    from tuner.server.procs import pid_alive, process_group_members

    launched = fs.wait_event(None, event="launched", index=index)
    engine = fs.wait_event(None, event="engine", index=index)["engine_pid"]
    return not process_group_members(launched["pgid"]) and not pid_alive(engine)


def test_ctrl_c_once_stops_cleanly_and_resumes(fake_study: Callable[..., FakeStudy]) -> None:
    fs = fake_study(n_trials=3)
    env = tuner_env(FAKE_VLLM_FAULT_ON="2", FAKE_VLLM_HANG_REQUEST="3")  # trial 1's load never ends
    proc = start_tuner("run", str(fs.path), env=env)
    fs.wait_event(proc, event="request", index=2, n=3)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "trial 1 queued again" in err and "tuner resume" in err
    assert "Traceback" not in err
    assert fs.wait_event(None, event="sigterm", index=2)  # tuner stopped its server itself ...
    assert server_gone(fs, 2)  # ... and the whole group is gone already, before any resume

    trials = fs.trials()
    assert [(t.number, t.state) for t in trials] == [
        (0, TrialState.COMPLETE),
        (1, TrialState.FAIL),
        (2, TrialState.WAITING),
    ]
    assert trials[1].user_attrs["interrupted"] is True
    assert trials[2].user_attrs["requeued_from"] == 1

    done = run_tuner("resume", str(fs.path))
    assert done.returncode == 0, done.stderr[-3000:]
    trials = assert_study_whole(fs, budget=3)
    rerun = [t for t in trials if t.user_attrs.get("requeued_from") == 1]
    assert len(rerun) == 1 and rerun[0].params == trials[1].params and rerun[0].state == TrialState.COMPLETE
    assert fs.alive() == []


def test_ctrl_c_twice_stops_at_once_and_resumes(fake_study: Callable[..., FakeStudy]) -> None:
    fs = fake_study(n_trials=3)
    # trial 1's load never ends, and its server takes 60 s to stop
    env = tuner_env(FAKE_VLLM_FAULT_ON="2", FAKE_VLLM_HANG_REQUEST="3", FAKE_VLLM_STOP_DELAY="60")
    proc = start_tuner("run", str(fs.path), env=env)
    fs.wait_event(proc, event="request", index=2, n=3)
    proc.send_signal(signal.SIGINT)
    fs.wait_event(proc, event="sigterm", index=2)  # tuner is stopping the server (slowly)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-3000:]
    assert time.monotonic() - t0 < 5
    assert "stopped at once" in err and "Traceback" not in err
    assert server_gone(fs, 2)  # the group was killed on the way out

    running = by_state(fs.trials(), TrialState.RUNNING)
    assert [t.number for t in running] == [1]  # repaired by the next run
    done = run_tuner("resume", str(fs.path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3/3 trials finished" in done.stderr and "repaired interrupted trials [1]" in done.stderr
    trials = assert_study_whole(fs, budget=3)
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["interrupted"] is True
    assert fs.alive() == []
