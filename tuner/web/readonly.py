"""A study database opened so that nothing can be written to it (the dashboard's only storage).

Contract of :func:`open_readonly`: the URL is checked by :func:`tuner.search.storage.parse_url` (a bad URL is
a :class:`~tuner.errors.UsageError`, one line). ``sqlite:///PATH`` opens the file with SQLite's read-only mode
(``mode=ro``: the database refuses every write, and no journal is made), without Optuna's table creation
or its schema-version check; a missing file, a folder, or a file that is not an Optuna database is a
UsageError. ``postgresql://`` (and ``mysql://``) open with every transaction read-only (PostgreSQL's
``default_transaction_read_only``; MySQL's ``SET SESSION TRANSACTION READ ONLY``). A database that cannot be
read is a UsageError too: the dashboard has nothing to show without it. A write attempted through the
storage fails in the database.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy import event

from tuner.errors import UsageError
from tuner.search.storage import describe, parse_url, sqlite_path


def open_readonly(url: str) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``, read-only (see the module docstring)."""
    backend = parse_url(url).get_backend_name()
    kwargs: dict[str, Any] = {}
    target = url
    if backend == "sqlite":
        path = sqlite_path(url)
        assert path is not None
        if path.is_dir():
            raise UsageError(f"storage {url!r}: {path} is a folder, not a database file")
        if not path.exists():
            raise UsageError(f"no study database at {path}")
        target = f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=ro&uri=true"
        kwargs = {"connect_args": {"timeout": 30}}
    elif backend == "postgresql":
        kwargs = {"connect_args": {"options": "-c default_transaction_read_only=on"}}
    try:
        storage = optuna.storages.RDBStorage(
            target, engine_kwargs=kwargs, skip_table_creation=True, skip_compatibility_check=True
        )
        if backend == "mysql":
            event.listen(storage.engine, "connect", _mysql_read_only)
            storage.engine.dispose()
        storage.get_all_studies()  # an Optuna database answers; anything else fails here
    except ImportError as e:
        raise UsageError(f"storage {_safe(url)}: its database driver is not installed ({e})") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise UsageError(
            f"storage {_safe(url)} cannot be read as an Optuna database: {describe(e)}"
        ) from None
    return storage


def _mysql_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION READ ONLY")
    cursor.close()


def _safe(url: str) -> str:
    """The URL with any password hidden."""
    from tuner.config.redact import Redactor

    return Redactor().text(url)
