"""The study database on a read-only file system, or on a full disk: one clear line, a non-zero exit, and
nothing corrupted (an existing database stays byte-identical or at least loadable by plain Optuna, with its
trials intact, and `tuner resume` finishes the study once the disk has room again).

Real file systems: a tmpfs mounted read-only (``mount -o remount,ro``), and a tiny tmpfs filled up. Mounting
needs root with CAP_SYS_ADMIN (CI containers usually have it; without it, the read-only cases fall back to
``chmod`` for a non-root user and the disk-full cases are skipped, saying why).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.faults.conftest import FakeStudy, assert_study_whole
from tuner.cli.main import main
from tuner.config.spec import load_spec
from tuner.search.loop import run_study

pytestmark = pytest.mark.timeout(180)


@functools.lru_cache(maxsize=1)
def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True)
        if ok.returncode != 0:
            return False
        subprocess.run(["umount", "-l", d], capture_output=True)
    return True


NO_MOUNT = "needs root with CAP_SYS_ADMIN to mount a real tmpfs (read-only / full file system)"


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` (a tmpfs when mounting works) made read-only, then writable again."""
    if can_mount():
        remount(path, "ro")
        try:
            yield
        finally:
            remount(path, "rw")
    elif os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, m in modes.items():
                p.chmod(m)
    else:
        pytest.skip("root ignores permissions; " + NO_MOUNT)


@pytest.fixture
def db_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for the database: its own tmpfs when mounting works."""
    d = tmp_path / "db"
    if can_mount():
        with tmpfs(d, "4m"):
            yield d
    else:
        d.mkdir()
        yield d


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("tuner: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def integrity(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def test_read_only_folder_for_a_new_study(
    fake_study: Callable[..., FakeStudy], db_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs = fake_study(storage=f"sqlite:///{db_dir / 'new.db'}")
    with read_only(db_dir):
        code = main(["run", str(fs.path)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 1
    assert "cannot create the study database" in line and ("Read-only" in line or "Permission" in line), line
    assert not list(db_dir.iterdir())


@pytest.mark.slow
def test_read_only_folder_with_an_existing_study(
    fake_study: Callable[..., FakeStudy], db_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_dir / "faults.db"
    fs = fake_study(n_trials=1, storage=f"sqlite:///{db}")
    # made elsewhere and copied in: this process keeps no writable handle on the file system to remount
    made = fs.path.parent / "made.db"
    run_study(load_spec(fs.path), storage_url=f"sqlite:///{made}")
    first = fs.trials(f"sqlite:///{made}")
    db.write_bytes(made.read_bytes())
    before = digest(db)
    capsys.readouterr()
    with read_only(db_dir):
        code = main(["run", str(fs.path), "--n-trials", "3"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 1 and "readonly" in line.replace("-", "").replace(" ", ""), line
        assert main(["status", str(fs.path)]) == 0  # reading still works
        assert "1/1 finished" in capsys.readouterr().out
    assert digest(db) == before
    assert integrity(db) == "ok"
    again = fs.trials(f"sqlite:///{db}")
    assert [(t.number, t.state, t.values, t.user_attrs) for t in again] == [
        (t.number, t.state, t.values, t.user_attrs) for t in first
    ]
    assert fs.alive() == []


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


@pytest.mark.skipif(not can_mount(), reason=NO_MOUNT)
def test_disk_full_for_a_new_study(
    fake_study: Callable[..., FakeStudy], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "tiny", "64k") as tiny:
        fs = fake_study(storage=f"sqlite:///{tiny / 'new.db'}")
        code = main(["run", str(fs.path)])
        line = one_error_line(capsys.readouterr().err)
        assert code == 1 and "database or disk is full" in line, line
        assert not list(tiny.iterdir())  # no half-made database left to trip the next run
    assert fs.alive() == []


@pytest.mark.slow
@pytest.mark.skipif(not can_mount(), reason=NO_MOUNT)
def test_disk_full_in_the_middle_of_a_study(
    fake_study: Callable[..., FakeStudy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with tmpfs(tmp_path / "small", "2m") as small:
        db = small / "faults.db"
        url = f"sqlite:///{db}"
        fs = fake_study(n_trials=3, storage=url)
        # trial 1's server takes 2 s to start: the disk fills up meanwhile
        monkeypatch.setenv("FAKE_VLLM_FAULT_ON", "2")
        monkeypatch.setenv("FAKE_VLLM_START_DELAY", "2")
        filled: list[Path] = []

        def filler() -> None:
            fs.wait_event(None, event="engine", index=2)
            filled.append(fill(small))

        t = threading.Thread(target=filler, daemon=True)
        t.start()
        code = main(["run", str(fs.path)])
        t.join(timeout=30)
        line = one_error_line(capsys.readouterr().err)
        assert code == 1 and "database or disk is full" in line, line
        assert filled

        assert integrity(db) == "ok"
        trials = optuna.load_study(study_name=fs.name, storage=url).get_trials(deepcopy=False)
        assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.RUNNING)]
        assert trials[0].user_attrs["status"] == "ok"

        filled[0].unlink()  # room again: the study resumes to its budget
        monkeypatch.delenv("FAKE_VLLM_START_DELAY")
        out = run_study(load_spec(fs.path), must_exist=True)
        assert out.repaired == [1] and out.complete == 3
        assert_study_whole(fs, budget=3, storage=url)
    assert fs.alive() == []
