"""One exception tree for tuner.

::

    TunerError                      anything tuner reports to a person as one line
    ├── UsageError                  bad input: study file, --set value, storage URL, CLI arguments (exit 2)
    │   └── SpecError               a study file that does not validate (names file, key path, reason)
    ├── StorageError                the study database cannot be opened or written (exit 1)
    ├── TrialFailure                one trial's configuration failed; carries a failure class
    │   ├── ServerStartError        the server never became healthy (oom, invalid_config, startup_timeout, port_in_use)
    │   └── ServerCrashed           the server died while under load (crashed)
    └── Interrupted                 the user asked to stop (Ctrl-C); the study is resumable

Errors carry their context (the file, the key, the log tail) so the message is complete on its own.
A failed *request* is never an exception: it is a ``RequestRecord`` with ``error`` set.
"""

from __future__ import annotations

from collections.abc import Sequence

#: exit statuses of the ``tuner`` command: a failure that is not the user's input, bad input, interrupted
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class TunerError(Exception):
    """Base class: ``str(err)`` is one line a person can act on."""

    exit_code = EXIT_FAILURE


class UsageError(TunerError):
    """Bad input from the user. Nothing stored is touched."""

    exit_code = EXIT_BAD_INPUT


class SpecError(UsageError):
    """A study file that does not validate."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(f"{where}{reason}")


class StorageError(TunerError):
    """The study database cannot be opened, read or written."""

    exit_code = EXIT_FAILURE


class TrialFailure(TunerError):
    """A configuration failed. ``failure`` is one of :data:`tuner.server.failures.FAILURE_CLASSES`."""

    def __init__(self, failure: str, message: str, log_tail: Sequence[str] = (), log_path: str | None = None):
        self.failure = failure
        self.log_tail = list(log_tail)
        self.log_path = log_path
        super().__init__(f"{failure}: {message}")


class ServerStartError(TrialFailure):
    """The server exited, or did not become healthy in time."""


class ServerCrashed(TrialFailure):
    """The server died while it was being measured."""


class Interrupted(TunerError):
    """The user interrupted the run; what was finished is stored and the study is resumable."""

    exit_code = EXIT_INTERRUPTED
