"""Two real `tuner run` processes on one study (two workers on one machine, e.g. one per GPU): no
"database is locked" crash, no trial run twice, trial numbers unique, the budget met exactly.

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
from optuna.trial import TrialState

from tests.faults.conftest import FakeStudy, assert_study_whole, by_state, start_tuner, tuner_env
from tuner.server.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


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


def two_workers(fs: FakeStudy, budget: int, storage: str | None) -> None:
    extra = ["--storage", storage] if storage else []
    env = tuner_env(FAKE_VLLM_TOKEN_DELAY="0.02")
    workers = [start_tuner("run", str(fs.path), *extra, env=env) for _ in range(2)]
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


def test_two_workers_on_one_sqlite_study(fake_study: Callable[..., FakeStudy]) -> None:
    fs = fake_study(n_trials=6)
    two_workers(fs, 6, None)


def test_two_workers_on_one_postgresql_study(fake_study: Callable[..., FakeStudy], postgres_url: str) -> None:
    fs = fake_study(n_trials=6)
    two_workers(fs, 6, postgres_url)
    status = subprocess.run(
        [*start_tuner_args("status", str(fs.path), "--storage", postgres_url)],
        capture_output=True,
        text=True,
        env=tuner_env(),
        timeout=120,
    )
    assert status.returncode == 0 and "6/6 finished" in status.stdout, status.stderr
    _dashboard_reads(postgres_url, fs.name, 6)


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
