"""tuner.search.workers' two settings: the host identity (``TUNER_WORKER_HOST``) and the heartbeat grace
(``TUNER_HEARTBEAT_GRACE_S``), and how a trial of another identity on this very machine is judged."""

from __future__ import annotations

import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from tuner.cli.main import main
from tuner.errors import EXIT_BAD_INPUT, UsageError
from tuner.search.workers import (
    GRACE_ENV,
    GRACE_S,
    HEARTBEAT_S,
    HOST_ENV,
    heartbeat_grace_s,
    heartbeat_interval_s,
    this_worker,
    trial_is_orphan,
)

DEAD_PID = 2**22 + 12345  # above the kernel's pid_max: never a live process


def running_trial(worker: dict[str, Any], heartbeat_at: float) -> FrozenTrial:
    return FrozenTrial(
        number=0,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={"worker": worker, "heartbeat_at": heartbeat_at},
        system_attrs={},
        intermediate_values={},
        trial_id=0,
    )


def test_the_host_is_the_hostname_unless_named() -> None:
    plain = this_worker({})
    assert plain.host == socket.gethostname()
    assert this_worker({HOST_ENV: "  "}) == plain
    assert this_worker({HOST_ENV: socket.gethostname()}) == plain  # naming the hostname changes nothing
    named = this_worker({HOST_ENV: " host-a "})
    assert (named.host, named.pid, named.pid_start) == ("host-a", plain.pid, plain.pid_start)
    assert named.boot_id == (None if plain.boot_id is None else f"host-a/{plain.boot_id}")


def test_two_identities_on_one_machine_are_two_hosts() -> None:
    """host-b's trial, its pid dead, judged by host-a on the same machine: by heartbeat, not by pid."""
    a, b = this_worker({HOST_ENV: "host-a"}), this_worker({HOST_ENV: "host-b"})
    if a.boot_id is not None:
        assert a.boot_id != b.boot_id
    now = time.time()
    dead_b = {**b.to_dict(), "pid": DEAD_PID}
    assert not trial_is_orphan(running_trial(dead_b, now - 4), now=now, grace_s=5, me=a)
    assert trial_is_orphan(running_trial(dead_b, now - 6), now=now, grace_s=5, me=a)
    # the same record judged by host-b itself: its pid is gone, dead at once
    assert trial_is_orphan(running_trial(dead_b, now), now=now, grace_s=5, me=b)


@pytest.mark.parametrize(
    ("value", "grace"), [(None, GRACE_S), ("", GRACE_S), ("5", 5.0), (" 90 ", 90.0), ("0.5", 0.5)]
)
def test_the_grace_is_read_from_the_environment(value: str | None, grace: float) -> None:
    assert heartbeat_grace_s({} if value is None else {GRACE_ENV: value}) == grace


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf", "1e400", "10s"])
def test_a_bad_grace_is_a_one_line_usage_error(value: str) -> None:
    with pytest.raises(UsageError) as err:
        heartbeat_grace_s({GRACE_ENV: value})
    message = str(err.value)
    assert GRACE_ENV in message and repr(value) in message and "\n" not in message
    assert err.value.exit_code == EXIT_BAD_INPUT


def test_heartbeats_come_at_least_four_times_a_grace() -> None:
    assert heartbeat_interval_s(GRACE_S) == HEARTBEAT_S
    assert heartbeat_interval_s(5.0) == 1.25


def test_orphans_are_judged_with_the_grace_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    trial = running_trial({**this_worker({HOST_ENV: "host-b"}).to_dict(), "pid": DEAD_PID}, now - 10)
    me = this_worker({HOST_ENV: "host-a"})
    monkeypatch.delenv(GRACE_ENV, raising=False)
    assert not trial_is_orphan(trial, now=now, me=me)
    monkeypatch.setenv(GRACE_ENV, "5")
    assert trial_is_orphan(trial, now=now, me=me)


def test_tuner_run_refuses_a_bad_grace_before_any_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m").mkdir()
    db = tmp_path / "s.db"
    study = {
        "name": "grace",
        "model": str(tmp_path / "m"),
        "search": {"max-num-seqs": {"low": 2, "high": 64}},
        "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
        "slo": {"ttft_p99_ms": 1000},
        "n_trials": 1,
        "storage": f"sqlite:///{db}",
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    monkeypatch.setenv("TUNER_CHECK_VLLM_FLAGS", "0")
    monkeypatch.setenv(GRACE_ENV, "ten minutes")
    assert main(["run", str(tmp_path / "s.yaml")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and GRACE_ENV in err and "Traceback" not in err, err
    assert not db.exists()
