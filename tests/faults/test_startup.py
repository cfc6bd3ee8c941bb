"""Servers that never become healthy, or die at start: the trial gets its failure class and the log tail,
the whole process group (API process and engine child) is gone before the next trial, the study goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.conftest import FakeStudy, assert_study_whole
from tuner.config.spec import load_spec
from tuner.progress import FinishedTrial, NullReporter
from tuner.search.loop import run_study
from tuner.server.procs import pid_alive, process_group_members

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class GroupWatch(NullReporter):
    """When a trial is reported finished, records whether the fake's servers so far left any process."""

    def __init__(self, fs: FakeStudy) -> None:
        self.fs = fs
        self.left: dict[int, list[int]] = {}

    def trial_finished(self, number: int, status: str, finished: FinishedTrial) -> None:
        groups = self.fs.groups()
        left = {p for g in groups for p in process_group_members(g)}
        left |= {p for p in self.fs.server_processes() if pid_alive(p)}
        self.left[number] = sorted(left)


@pytest.mark.parametrize(
    ("knobs", "failure", "text"),
    [
        ({"FAKE_VLLM_HANG_HEALTH": "1"}, "startup_timeout", "not healthy after"),
        ({"FAKE_VLLM_START_DELAY": "30"}, "startup_timeout", "Loading weights"),
        ({"FAKE_VLLM_EXIT_AT_START": "oom"}, "oom", "less than desired CPU memory utilization"),
    ],
    ids=["health-hangs", "never-listens", "oom-at-start"],
)
def test_server_that_never_becomes_healthy(
    fake_study: Callable[..., FakeStudy],
    monkeypatch: pytest.MonkeyPatch,
    knobs: dict[str, str],
    failure: str,
    text: str,
) -> None:
    fs = fake_study(n_trials=3, server={"startup_timeout_s": 2})
    monkeypatch.setenv("FAKE_VLLM_FAULT_ON", "2")
    for k, v in knobs.items():
        monkeypatch.setenv(k, v)
    watch = GroupWatch(fs)
    out = run_study(load_spec(fs.path), reporter=watch)
    assert out.complete == 3

    trials = assert_study_whole(fs, budget=3)
    failed: Any = trials[1].user_attrs
    assert failed["status"] == failure, failed["message"]
    assert text in failed["message"] or any(text in line for line in failed["log_tail"]), failed
    assert failed["log_tail"] and failed["feasible"] is False
    assert watch.left[1] == [], (
        f"processes of the failed server alive when the trial was stored: {watch.left}"
    )
    assert [t.user_attrs["status"] for t in trials if t.number != 1] == ["ok", "ok"]
    assert fs.alive() == []
