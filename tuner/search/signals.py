"""Ctrl-C while a study runs: the first one stops the work in hand, the second one leaves at once.

* **First** — inside a trial (:attr:`SigintGuard.in_trial`) it cancels the running load
  (:func:`tuner.load.cancel.cancel_running_load`, which unwinds and raises KeyboardInterrupt itself) or,
  with no load running, raises KeyboardInterrupt in the trial function (which stops its server). Outside a
  trial it is only counted (:attr:`SigintGuard.count`): the loop stops at its next safe point.
* **Second** — :func:`force_exit`: kill this process's servers and ``os._exit(130)``; the trial left
  RUNNING is repaired on resume.

A process started with SIGINT ignored (a background job) keeps it ignored; only the main thread can set
a handler, so elsewhere the guard does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from tuner.load.cancel import cancel_running_load
from tuner.server.procs import read_pidfiles


class SigintGuard:
    """The SIGINT handler while a study loop runs (see the module docstring); a context manager."""

    def __init__(self, runtime_dir: Path, *, enabled: bool) -> None:
        self.runtime_dir = runtime_dir
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.count = 0
        self.in_trial = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self) -> SigintGuard:
        if self.enabled and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            self.enabled = False  # started with SIGINT ignored (a background job): keep it so
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            previous = self._previous
            signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2:
            force_exit(self.runtime_dir)
        if self.in_trial:
            if cancel_running_load():
                return  # the load unwinds and raises KeyboardInterrupt itself (see tuner.load.cancel)
            raise KeyboardInterrupt


def force_exit(runtime_dir: Path) -> None:
    """Kill the server groups this process owns (its pidfiles in ``runtime_dir``) and ``os._exit(130)``."""
    try:
        for _path, record in read_pidfiles(runtime_dir):
            if record.get("owner_pid") == os.getpid():
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int(record["pgid"]), signal.SIGKILL)
        sys.stderr.write("tuner: stopped at once; `tuner resume` repairs the interrupted trial\n")
        sys.stderr.flush()
    finally:
        os._exit(130)
