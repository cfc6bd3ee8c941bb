"""Two real `tuner run` processes on one study (two workers on one machine, e.g. one per GPU): no
"database is locked" crash, no trial run twice, trial numbers unique, the budget met exactly.

On PostgreSQL the two workers carry two host identities (``TUNER_WORKER_HOST``), as two machines would: both
run the study to its budget; then one is SIGKILLed mid-trial and the other repairs its trial once the
heartbeat grace (``TUNER_HEARTBEAT_GRACE_S``, 5 s here) has passed, and finishes the study.

On SQLite (the default) and on PostgreSQL (``--storage postgresql://...``): a throwaway PostgreSQL server
is started for the test from the server binaries on this machine (Debian/Ubuntu: ``apt-get install
postgresql``; ``psycopg`` from ``pip install 'tuner[postgres]'``). Where they are missing the PostgreSQL test
is skipped, saying what to install (`make test` installs both where it can); with ``TUNER_REQUIRE_POSTGRES``
set in CI it fails instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.faults.conftest import (
    FakeStudy,
    assert_study_whole,
    by_state,
    kill9,
    start_tuner,
    tuner_env,
    wait_until,
)
from tuner.search.workers import GRACE_ENV, HOST_ENV
from tuner.server.ports import free_port
from tuner.server.procs import read_pidfiles, stop_leftover_servers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: both hosts' heartbeat grace in the dead-host test (seconds)
GRACE_S = 5.0


def pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def missing(reason: str) -> None:
    if os.environ.get("CI") and os.environ.get("TUNER_REQUIRE_POSTGRES"):
        pytest.fail(
            f"{reason}: CI must install it (apt-get install -y postgresql; pip install '.[postgres]')"
        )
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (data in a temporary folder), and a database in it."""
    try:
        import psycopg
    except ImportError:
        missing("psycopg is not installed (pip install 'tuner[postgres]')")
    initdb, postgres = pg_binary("initdb"), pg_binary("postgres")
    if not initdb or not postgres:
        missing("no PostgreSQL server binaries (initdb, postgres) on this machine")
    assert initdb and postgres
    folder = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as an unprivileged user
        import pwd

        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or not shutil.which("setpriv"):
            missing("running as root without a 'postgres'/'nobody' user or setpriv to drop privileges")
        assert user is not None
        pw = pwd.getpwnam(user)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
    data = folder / "data"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "tuner", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    port = free_port()
    options = ["-h", "127.0.0.1", "-p", str(port), "-k", str(folder), "-c", "fsync=off"]
    server = subprocess.Popen(
        [*as_user, postgres, "-D", str(data), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        admin = f"postgresql://tuner@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as con:
                    con.execute("CREATE DATABASE tuner")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f"postgresql://tuner@127.0.0.1:{port}/tuner"
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def two_workers(
    fs: FakeStudy, budget: int, storage: str | None, hosts: tuple[str, str] | None = None
) -> list[FrozenTrial]:
    """Two workers run the study to its budget (with ``hosts``: under these identities); returns its trials."""
    extra = ["--storage", storage] if storage else []
    envs = [
        tuner_env(FAKE_VLLM_TOKEN_DELAY="0.02", **({HOST_ENV: host} if host else {}))
        for host in hosts or (None, None)
    ]
    workers = [start_tuner("run", str(fs.path), *extra, env=env) for env in envs]
    results = [w.communicate(timeout=240) for w in workers]
    for w, (_out, err) in zip(workers, results, strict=True):
        assert w.returncode == 0, err[-3000:]
        assert "locked" not in err.lower() and "Traceback" not in err, err[-3000:]

    trials = assert_study_whole(fs, budget=budget, storage=storage)
    complete = by_state(trials, TrialState.COMPLETE)
    assert all(t.user_attrs["status"] == "ok" for t in complete)
    assert sum(bool(t.user_attrs.get("is_baseline")) for t in complete) == 1
    pids = {t.user_attrs["worker"]["pid"] for t in complete}
    assert len(pids) == 2, f"one worker ran every trial: {pids}"
    for t in by_state(trials, TrialState.FAIL):  # only a surplus trial may be given back
        assert t.user_attrs.get("surplus"), t.user_attrs
    # no server measured twice: one server start per finished trial, none for a given-back one
    starts = [e for e in fs.events() if e["event"] == "launched"]
    assert len(starts) == budget
    assert fs.alive() == []
    if hosts is not None:
        assert {t.user_attrs["worker"]["host"] for t in complete} == set(hosts)
    return trials


def test_two_workers_on_one_sqlite_study(fake_study: Callable[..., FakeStudy]) -> None:
    fs = fake_study(n_trials=6)
    two_workers(fs, 6, None)


def test_two_workers_on_one_postgresql_study(fake_study: Callable[..., FakeStudy], postgres_url: str) -> None:
    """Two hosts' worth of workers: two identities (``TUNER_WORKER_HOST``), as two machines would have."""
    fs = fake_study(n_trials=6)
    two_workers(fs, 6, postgres_url, hosts=("host-a", "host-b"))
    status = subprocess.run(
        [*start_tuner_args("status", str(fs.path), "--storage", postgres_url)],
        capture_output=True,
        text=True,
        env=tuner_env(),
        timeout=120,
    )
    assert status.returncode == 0 and "6/6 finished" in status.stdout, status.stderr
    _dashboard_reads(postgres_url, fs.name, 6)


def test_a_dead_host_is_repaired_by_another_after_the_grace(
    fake_study: Callable[..., FakeStudy], postgres_url: str, tmp_path: Path
) -> None:
    """Two hosts (grace 5 s: heartbeats every 1.25 s). host-b is SIGKILLed while it starts its trial's
    server; host-a marks that trial interrupted once the grace has passed since host-b's last heartbeat,
    runs its params again and finishes the study. host-b's server is left to host-b's next run (its
    pidfiles, its machine): here the test sweeps it as that run would."""
    budget = 5
    fs = fake_study(n_trials=budget)
    run = ["run", str(fs.path), "--storage", postgres_url]

    def host(name: str, **extra: str) -> subprocess.Popen[str]:
        runtime = str(tmp_path / f"runtime-{name}")  # each host's own pidfiles, as on two machines
        knobs = {HOST_ENV: name, GRACE_ENV: str(GRACE_S), "TUNER_RUNTIME_DIR": runtime, **extra}
        return start_tuner(*run, env=tuner_env(**knobs))

    b = host("host-b", FAKE_VLLM_START_DELAY="60")  # its server takes 60 s to listen
    a: subprocess.Popen[str] | None = None
    server: dict[str, int] = {}

    def b_server_up() -> bool:
        engines = {e["pid"] for e in fs.events() if e["event"] == "engine"}
        found = [r for _p, r in read_pidfiles(tmp_path / "runtime-host-b") if r["pid"] in engines]
        server.update(found[0] if found else {})
        return bool(server) or b.poll() is not None

    try:
        assert wait_until(b_server_up, 60) and b.poll() is None, b.communicate()[1][-3000:]
        # after the kill host-a runs 3 more trials of >= 2.9 s of token delays each: busy past the grace
        a = host("host-a", FAKE_VLLM_TOKEN_DELAY="0.12")
        fs.wait_event(a, event="launched", index=2)  # host-a's first server: both hosts run trials
        running = by_state(fs.trials(postgres_url), TrialState.RUNNING)
        lost = [t for t in running if t.user_attrs.get("worker", {}).get("host") == "host-b"]
        assert len(lost) == 1, [(t.number, t.user_attrs.get("worker")) for t in running]
        kill9(b)
        _out, err = a.communicate(timeout=120)
        assert a.returncode == 0 and "Traceback" not in err, err[-3000:]
    finally:
        for proc in (b, a):
            if proc is not None and proc.poll() is None:
                kill9(proc)
        swept = stop_leftover_servers(tmp_path / "runtime-host-b", stop_timeout_s=2)  # host-b's next run
    assert swept == [server["pgid"]]
    assert wait_until(lambda: fs.alive() == [], 10), f"fake server processes left: {fs.alive()}"

    trials = assert_study_whole(fs, budget=budget, storage=postgres_url)
    [failed] = by_state(trials, TrialState.FAIL)
    assert failed.number == lost[0].number and failed.user_attrs["interrupted"] is True
    assert failed.datetime_complete is not None
    waited = failed.datetime_complete.timestamp() - failed.user_attrs["heartbeat_at"]
    assert waited >= GRACE_S, f"repaired {waited:.1f} s after host-b's last heartbeat"
    [rerun] = [t for t in trials if t.user_attrs.get("requeued_from") == failed.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == failed.params
    assert {t.user_attrs["worker"]["host"] for t in by_state(trials, TrialState.COMPLETE)} == {"host-a"}
    assert f"trial(s) [{failed.number}] had lost their worker" in err, err[-3000:]


def _dashboard_reads(url: str, name: str, finished: int) -> None:
    """``tuner dashboard`` over the same PostgreSQL study: the study page lists every trial, and its storage
    refuses writes (a read-only transaction)."""
    import asyncio
    import re

    import optuna
    from aiohttp.test_utils import TestClient, TestServer

    from tuner.web.app import make_app
    from tuner.web.readonly import open_readonly

    async def browse() -> tuple[int, str]:
        async with TestClient(TestServer(make_app(open_readonly(url), url=url, environ={}))) as c:
            resp = await c.get(f"/study/{name}")
            return resp.status, await resp.text()

    code, page = asyncio.run(browse())
    shown = re.search(r'id="trials" data-count="(\d+)"', page)
    assert code == 200 and shown is not None and int(shown.group(1)) >= finished, page[:2000]
    with pytest.raises(optuna.exceptions.StorageInternalError):
        open_readonly(url).create_new_study([optuna.study.StudyDirection.MINIMIZE], "another")


def start_tuner_args(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "tuner", *args]
