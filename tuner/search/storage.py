"""The study database: a storage URL in, an Optuna storage out. Optuna owns every table; tuner adds none.

Contract of :func:`open_storage`:

* ``sqlite:///PATH`` — an :class:`optuna.storages.RDBStorage` on that file. With ``create=True`` the parent
  folder and the file are created when missing; with ``create=False`` a missing file is a
  :class:`~tuner.errors.UsageError` and nothing is written (opening an existing Optuna database writes
  nothing either: Optuna's own table check only reads). A file that exists but is not an Optuna database is
  refused (UsageError) before anything is written to it.
* ``postgresql://...`` (and ``mysql://...``) pass through to Optuna unchanged.
* A URL that does not parse, or names another kind of database, is a UsageError (one line). A database
  that cannot be opened or written (read-only folder, disk full, server down) is a
  :class:`~tuner.errors.StorageError`. :func:`storage_errors` maps the same failures when they happen later,
  in the middle of a study.

Several processes on one SQLite file (two ``tuner run`` workers, ``tuner status`` beside them): every
transaction on the file starts with ``BEGIN IMMEDIATE`` (the write lock is taken before the first read),
and a process waits up to :data:`SQLITE_TIMEOUT_S` for the lock. That makes each of Optuna's storage calls
atomic across processes — popping a queued trial, numbering a new trial, failing a stale one — and avoids
the lock-upgrade deadlock in which SQLite answers "database is locked" at once instead of waiting. The
price: every storage call is serialised. A trial makes a few dozen short calls (about 0.1 s of storage time)
over minutes of serving; measured on a 2-core machine, 32 workers with zero-length trials shared one file
with no lock error, no trial run twice and unique trial numbers (docs/faults.md). So one machine's workers
(one per GPU) share a file without trouble. Use PostgreSQL (``--storage postgresql://user@host/db``, with
``pip install 'tuner[postgres]'``) when workers run on more than one machine (SQLite on NFS is not safe),
or when dozens of workers run trials of seconds, so that the serialised storage time becomes a bottleneck.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from tuner.errors import StorageError, UsageError

#: seconds a process waits for the SQLite write lock before giving up
SQLITE_TIMEOUT_S = 60
#: backends tuner passes to Optuna
_BACKENDS = ("sqlite", "postgresql", "mysql")
#: tables every Optuna RDB database has (used to recognise one)
_OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})


def parse_url(url: str) -> URL:
    """Check a storage URL without touching any database. Raises :class:`UsageError` (one line)."""
    if not url or not url.strip():
        raise UsageError("storage URL is empty")
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UsageError(f"storage URL {url!r} does not parse; try sqlite:///path/study.db") from None
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise UsageError(
            f"storage URL {url!r}: {backend!r} is not supported; use sqlite:/// or postgresql://"
        )
    if backend == "sqlite" and not parsed.database:
        raise UsageError(f"storage URL {url!r} names no file; try sqlite:///path/study.db")
    if backend == "sqlite" and parsed.database == ":memory:":
        raise UsageError(f"storage URL {url!r}: an in-memory database would lose the study; name a file")
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (absolute), or None for other backends."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database is None:
        return None
    return Path(parsed.database).expanduser().resolve()


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Open the study database at ``url`` (see the module docstring for the contract)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return _open_rdb(url, {})
    path = sqlite_path(url)
    assert path is not None
    if path.is_dir():
        raise UsageError(f"storage {url!r}: {path} is a folder, not a database file")
    new = not path.exists()
    if not new:
        _check_optuna_file(path, url)
    elif not create:
        raise UsageError(f"no study database at {path} (start one with: tuner run STUDY.yaml)")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent):
                pass  # the folder takes a new file (root ignores permissions, not a read-only mount)
        except OSError as e:
            raise StorageError(f"cannot create the study database {path}: {e.strerror or e}") from None
    url = f"sqlite:///{path}"
    try:
        storage = _open_rdb(url, {"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    except StorageError as e:
        if new and re.search(r"full|disk i/o|read-?only", str(e), re.IGNORECASE):
            # a half-made file would later read as "not an Optuna database"; only this process made it
            for leftover in (path, path.with_name(path.name + "-journal")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        raise
    _serialise_sqlite(storage.engine)
    return storage


def _open_rdb(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """RDBStorage, retried a few times: two processes creating the same new file race on its tables."""
    last: Exception | None = None
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except ImportError as e:
            raise UsageError(
                f"storage {_safe(url)}: its database driver is not installed ({e.__cause__ or e}); "
                "for PostgreSQL: pip install 'tuner[postgres]'"
            ) from None
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as e:
            last = e
            if _is_lock_or_race(e) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            break
        except sqlalchemy.exc.SQLAlchemyError as e:
            last = e
            break
        except RuntimeError as e:  # Optuna's schema version check
            raise StorageError(f"storage {_safe(url)}: {e}") from None
    assert last is not None
    raise StorageError(f"cannot open storage {_safe(url)}: {describe(last)}") from None


def _is_lock_or_race(e: sqlalchemy.exc.DBAPIError) -> bool:
    text = str(e.orig).lower()
    return "locked" in text or "already exists" in text or "unique constraint" in text


def _check_optuna_file(path: Path, url: str) -> None:
    """Refuse an existing file that is not an (empty or) Optuna database, reading it read-only. When the
    read-only look fails for another reason (a hot journal left by a killed writer needs a writer to roll
    it back), the check is skipped: opening the storage will roll back or report the problem."""
    try:
        if path.stat().st_size == 0:
            return
        con = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=SQLITE_TIMEOUT_S)
        try:
            rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e):
            raise UsageError(f"storage {url!r}: {path} is not a SQLite database") from None
        return
    except OSError as e:
        raise StorageError(f"cannot read {path}: {e.strerror or e}") from None
    tables = {r[0] for r in rows}
    if tables and not tables >= _OPTUNA_TABLES:
        raise UsageError(f"storage {url!r}: {path} is a SQLite database but not an Optuna study database")


def _serialise_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Make every transaction ``BEGIN IMMEDIATE`` (SQLAlchemy's documented pysqlite recipe)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver stops issuing its own deferred BEGIN

    def on_begin(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections made while Optuna checked its tables lack the hook


def describe(e: BaseException) -> str:
    """One line for a database error: the driver's own words when there are some."""
    orig = getattr(e, "orig", None)
    if orig is None and isinstance(e, optuna.exceptions.StorageInternalError):
        orig = getattr(e.__cause__, "orig", None) or e.__cause__
    text = str(orig if orig is not None else e)
    return " ".join(text.split())[:300] or type(e).__name__


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Map database failures raised inside the block to :class:`StorageError` (one line)."""
    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError) as e:
        raise StorageError(f"storage {_safe(url)}: {describe(e)}") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StorageError(f"storage {_safe(url)}: {describe(e)}") from None


def _safe(url: str) -> str:
    """The URL with any password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<unparsable URL>"
