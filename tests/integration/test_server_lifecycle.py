"""VllmServer against the stand-in server (tests/fakes/standin_server.py): start, classify, stop, sweep.

Fast: every test starts a small stdlib process; the whole file takes a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tuner.errors import ServerCrashed, ServerStartError
from tuner.server.ports import free_port, http_status, port_accepts
from tuner.server.process import VllmServer, start_server_with_retry, wait_gpu_memory_released
from tuner.server.procs import pid_alive, process_group_members, read_pidfiles, stop_leftover_servers

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "fakes" / "standin_server.py"


def standin(port: int, *extra: str) -> list[str]:
    # vLLM-like flags the stand-in ignores, to prove argv passes through untouched
    return [sys.executable, str(STANDIN), "--model", "m", "--port", str(port), "--max-num-seqs", "8", *extra]


def make(tmp_path: Path, *extra: str, **kw: Any) -> VllmServer:
    port = free_port()
    kw.setdefault("startup_timeout_s", 10.0)
    kw.setdefault("stop_timeout_s", 5.0)
    kw.setdefault("poll_interval_s", 0.05)
    kw.setdefault("gpu_probe", None)
    return VllmServer(
        standin(port, *extra), port=port, log_path=tmp_path / "server.log", runtime_dir=tmp_path / "run", **kw
    )


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def child_pid(server: VllmServer) -> int:
    for line in server.log_tail(200):
        if line.startswith("standin child pid "):
            return int(line.split()[-1])
    raise AssertionError(f"no child pid in {server.log_tail()}")


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Process groups a test created outside VllmServer; killed at the end whatever happens."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        if process_group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_healthy_start_stop_leaves_no_process(tmp_path: Path) -> None:
    server = make(tmp_path, "--spawn-child")
    with server:
        assert server.alive() and server.returncode is None
        assert server.startup_s is not None and 0 < server.startup_s < 10
        assert http_status("127.0.0.1", server.port, "/v1/models") == 200
        assert server.url == f"http://127.0.0.1:{server.port}"
        pgid = server.pgid
        assert pgid is not None
        child = child_pid(server)
        assert set(process_group_members(pgid)) >= {pgid, child}
        assert server.pidfile is not None and server.pidfile.exists()
        record = json.loads(server.pidfile.read_text())
        assert record["pid"] == record["pgid"] == pgid
        assert record["argv"] == server.argv and record["owner_pid"] == os.getpid()
        assert record["port"] == server.port and record["host"] == "127.0.0.1"
        assert any("non-default args" in line for line in server.log_tail())
        server.check_alive()  # no exception while it runs
    assert process_group_members(pgid) == []
    assert not pid_alive(child)
    assert not server.pidfile.exists()
    assert server.port_released is True and not port_accepts("127.0.0.1", server.port)
    assert server.returncode == 0 and not server.killed
    assert server.stop() == 0  # idempotent


def test_never_healthy_is_startup_timeout_and_group_gone(tmp_path: Path) -> None:
    server = make(tmp_path, "--mode", "never-healthy", "--spawn-child", startup_timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert time.monotonic() - t0 < 8
    assert info.value.failure == "startup_timeout"
    assert "not healthy after" in str(info.value)
    assert info.value.log_path == str(tmp_path / "server.log")
    assert server.pgid is not None and process_group_members(server.pgid) == []
    assert read_pidfiles(tmp_path / "run") == []


@pytest.mark.parametrize(
    ("mode", "failure", "text", "status"),
    [
        ("exit-oom", "oom", "less than desired CPU memory utilization", 1),
        ("exit-invalid", "invalid_config", "unrecognized arguments", 2),
    ],
)
def test_exit_at_start_is_classified(tmp_path: Path, mode: str, failure: str, text: str, status: int) -> None:
    server = make(tmp_path, "--mode", mode)
    with pytest.raises(ServerStartError) as info:
        server.start()
    err = info.value
    assert err.failure == failure
    assert text in str(err) and f"exit status {status}" in str(err)
    assert any(text in line for line in err.log_tail)
    assert server.returncode == status


def test_ignore_sigterm_gets_sigkill_after_stop_timeout(tmp_path: Path) -> None:
    server = make(tmp_path, "--mode", "ignore-sigterm", "--spawn-child", stop_timeout_s=0.5)
    server.start()
    pgid = server.pgid
    assert pgid is not None
    child = child_pid(server)
    t0 = time.monotonic()
    assert server.stop() == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - t0 < 5
    assert server.killed
    assert process_group_members(pgid) == [] and not pid_alive(child)


def test_port_bound_by_listener_is_port_in_use_at_once(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = VllmServer(standin(port), port=port, log_path=tmp_path / "a.log", gpu_probe=None)
        with pytest.raises(ServerStartError) as info:
            server.start()
        assert info.value.failure == "port_in_use"
        assert server.pid is None  # nothing was launched


def test_port_taken_between_choice_and_bind_then_retry_succeeds(tmp_path: Path) -> None:
    # bound but not listening: connections are refused, so only the server's own bind finds out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        server = VllmServer(standin(taken), port=taken, log_path=tmp_path / "a.log", gpu_probe=None)
        with pytest.raises(ServerStartError) as info:
            server.start()
        assert info.value.failure == "port_in_use"
        assert "Address already in use" in str(info.value)

        picks = iter([taken, free_port()])
        log = tmp_path / "retry.log"
        with start_server_with_retry(
            standin, log_path=log, port_picker=lambda host: next(picks), gpu_probe=None, poll_interval_s=0.05
        ) as srv:
            assert srv.port != taken and srv.alive()
            assert http_status("127.0.0.1", srv.port) == 200
        text = log.read_text()
        assert "Address already in use" in text and "Started server process" in text  # both attempts kept


def test_retry_gives_up_after_attempts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        with pytest.raises(ServerStartError) as info:
            start_server_with_retry(
                standin, log_path=tmp_path / "r.log", attempts=2, port_picker=lambda h: taken, gpu_probe=None
            )
        assert info.value.failure == "port_in_use"


def test_other_failures_are_not_retried(tmp_path: Path) -> None:
    calls: list[int] = []

    def argv(port: int) -> list[str]:
        calls.append(port)
        return standin(port, "--mode", "exit-invalid")

    with pytest.raises(ServerStartError) as info:
        start_server_with_retry(argv, log_path=tmp_path / "r.log", gpu_probe=None)
    assert info.value.failure == "invalid_config" and len(calls) == 1


def test_death_under_load_raises_server_crashed(tmp_path: Path) -> None:
    with make(tmp_path, "--mode", "die-after", "--die-after", "0.5") as server:
        server.check_alive()
        assert wait_for(lambda: not server.alive())
        with pytest.raises(ServerCrashed) as info:
            server.check_alive()
    assert info.value.failure == "crashed"
    assert "illegal memory access" in str(info.value) or "EngineDeadError" in str(info.value)
    assert info.value.log_tail and info.value.log_path


def test_a_running_server_that_stops_answering_health_is_crashed(tmp_path: Path) -> None:
    # vLLM's API process answers /health 503 for a moment after its engine died: check_alive gives it
    # exit_grace_s to exit, then stops it; either way it is dead
    with make(tmp_path, exit_grace_s=0.2) as server:
        server.check_alive()
        server.health_path = "/gone"  # from now on the server does not answer /health 200
        with pytest.raises(ServerCrashed) as info:
            server.check_alive()
        assert not server.alive()
    assert info.value.failure == "crashed" and "server exited with status" in str(info.value)


def test_env_is_merged_over_os_environ(tmp_path: Path) -> None:
    port = free_port()
    probe = tmp_path / "env.json"
    code = textwrap.dedent(
        f"""
        import json, os, runpy, sys
        json.dump({{k: os.environ.get(k) for k in ("TUNER_T", "PATH")}}, open({str(probe)!r}, "w"))
        sys.argv = [{str(STANDIN)!r}, "--port", "{port}"]
        runpy.run_path({str(STANDIN)!r}, run_name="__main__")
        """
    )
    with VllmServer(
        [sys.executable, "-c", code],
        port=port,
        log_path=tmp_path / "e.log",
        env={"TUNER_T": "1"},
        gpu_probe=None,
    ):
        pass
    seen = json.loads(probe.read_text())
    assert seen == {"TUNER_T": "1", "PATH": os.environ.get("PATH")}


def test_missing_command_is_crashed_with_reason(tmp_path: Path) -> None:
    port = free_port()
    server = VllmServer(
        ["/nonexistent/vllm", "--port", str(port)], port=port, log_path=tmp_path / "x.log", gpu_probe=None
    )
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert info.value.failure == "crashed"
    assert "cannot start" in str(info.value)


# ------------------------------------------------------------------------------------ leftover sweep


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_kills_group_of_dead_owner_and_spares_live_owner(tmp_path: Path) -> None:
    run = tmp_path / "run"
    orphan = make(tmp_path, "--spawn-child")
    kept_port = free_port()
    kept = VllmServer(
        standin(kept_port), port=kept_port, log_path=tmp_path / "k.log", runtime_dir=run, gpu_probe=None
    )
    with orphan, kept:
        assert orphan.pidfile is not None and kept.pidfile is not None
        record = json.loads(orphan.pidfile.read_text())
        record["owner_pid"] = dead_pid()
        record["owner_starttime"] = None
        orphan.pidfile.write_text(json.dumps(record))
        pgid = orphan.pgid
        child = child_pid(orphan)

        assert stop_leftover_servers(run) == [pgid]
        assert wait_for(lambda: not orphan.alive())
        assert process_group_members(pgid or -1) == [] and not pid_alive(child)
        assert not orphan.pidfile.exists()

        assert kept.alive() and kept.pidfile.exists()  # a live owner's server is not touched
        assert stop_leftover_servers(run) == []
        assert kept.alive()


def test_sweep_does_not_kill_a_recycled_pid(tmp_path: Path, leftovers: list[int]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    leftovers.append(other.pid)
    record = {
        "pid": other.pid,
        "pgid": other.pid,
        "argv": [sys.executable, "-m", "vllm.entrypoints.openai.api_server"],  # not what runs there
        "owner_pid": dead_pid(),
    }
    (run / f"vllm-{other.pid}.json").write_text(json.dumps(record))
    assert stop_leftover_servers(run) == []
    assert other.poll() is None
    assert read_pidfiles(run) == []  # the stale pidfile is removed
    other.kill()
    other.wait()


OWNER = """
import sys, time
sys.path.insert(0, {root!r})
from tuner.server.ports import free_port
from tuner.server.process import VllmServer
port = free_port()
s = VllmServer([sys.executable, {standin!r}, "--port", str(port), "--spawn-child"], port=port,
               log_path={log!r}, runtime_dir={run!r}, gpu_probe=None, poll_interval_s=0.05)
s.start()
print(s.pgid, flush=True)
time.sleep(60)
"""


def test_kill_9_of_owner_takes_api_process_down_and_sweep_gets_the_rest(
    tmp_path: Path, leftovers: list[int]
) -> None:
    run, log = tmp_path / "run", tmp_path / "owner-server.log"
    code = OWNER.format(root=str(ROOT), standin=str(STANDIN), log=str(log), run=str(run))
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    pgid = int(owner.stdout.readline())
    leftovers.append(pgid)
    members = process_group_members(pgid)
    assert pgid in members and len(members) >= 2

    owner.send_signal(signal.SIGKILL)
    owner.wait()
    # PR_SET_PDEATHSIG: the API process (group leader) dies with its owner ...
    assert wait_for(lambda: not pid_alive(pgid))
    # ... while its own child lives on in the group: the pidfile sweep is the backstop
    assert process_group_members(pgid)
    assert stop_leftover_servers(run) == [pgid]
    assert process_group_members(pgid) == []
    assert read_pidfiles(run) == []


# ------------------------------------------------------------------------------------------ GPU wait


def test_gpu_wait_returns_when_memory_is_back_near_baseline() -> None:
    readings = iter([[9000, 100], [5000, 100], [1100, 150]])
    assert wait_gpu_memory_released(
        [1000, 100], probe=lambda: next(readings), tolerance_bytes=200, poll_s=0.01
    )


def test_gpu_wait_gives_up_after_timeout_and_skips_without_gpu() -> None:
    assert not wait_gpu_memory_released([0], probe=lambda: [10**9], timeout_s=0.05, poll_s=0.01)
    assert wait_gpu_memory_released(None, probe=lambda: [10**9])
    assert wait_gpu_memory_released([0], probe=lambda: None)


def test_stop_waits_for_gpu_memory(tmp_path: Path) -> None:
    # before start: 1 GiB used; while stopping, the probe shows the memory draining back
    readings = iter([[2**30], [20 * 2**30], [8 * 2**30], [2**30 + 2**20]])
    calls: list[int] = []

    def probe() -> list[int] | None:
        value = next(readings, [2**30])
        calls.append(value[0])
        return value

    server = make(tmp_path, gpu_probe=probe, gpu_release_timeout_s=5.0, gpu_poll_s=0.01)
    with server:
        pass
    assert server.gpu_released is True
    assert calls == [2**30, 20 * 2**30, 8 * 2**30, 2**30 + 2**20]
