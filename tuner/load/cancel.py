"""Ctrl-C while trials run: cancel their loads (and their waits), do not raise inside an event loop.

A ``KeyboardInterrupt`` raised by a signal handler lands wherever the main thread happens to be; inside an
event loop's callback (uvloop's in particular) it can be reported and swallowed, leaving the load waiting on
requests that never finish. So the study loop's SIGINT handler calls :func:`cancel_running_load` first.

Contract:

* Every :func:`run_cancellable` (a load on its own event loop) and every :func:`sleep_cancellable` (a trial
  waiting, e.g. for GPU memory) registers itself, by the thread that runs it, for as long as it runs; any
  number may run at once, in different threads (parallel trials, :mod:`tuner.search.parallel`).
* :func:`cancel_running_load` cancels every registered one (Ctrl-C); :func:`cancel_thread_load` only those
  of one thread (one trial), never another thread's. Both are thread-safe, take no lock (safe from a
  signal handler) and return whether something was cancelled.
* A cancelled load's task is cancelled (thread-safely, as ``asyncio.Runner`` does for its own handler) and
  :func:`run_cancellable` raises ``KeyboardInterrupt`` once the coroutine has unwound (sessions closed,
  ``finally`` blocks run), even if the coroutine swallowed the cancellation; a cancelled wait raises
  ``KeyboardInterrupt`` at once. With nothing registered, the handler raises ``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_R = TypeVar("_R")

#: what runs now: token -> (the thread's ident, its cancel function). Changed by single dict operations only
#: (atomic under the GIL), so a signal handler can read it while a thread adds or removes an entry.
_RUNNING: dict[int, tuple[int, Callable[[], None]]] = {}
_TOKENS = itertools.count(1)


def cancel_running_load() -> bool:
    """Cancel every running load and wait (every thread); False when none runs. Safe from a signal handler."""
    return _cancel(lambda ident: True)


def cancel_thread_load(ident: int) -> bool:
    """Cancel the loads and waits the thread ``ident`` (``threading.get_ident()``/``Thread.ident``) runs;
    another thread's go on. False when it runs none."""
    return _cancel(lambda owner: owner == ident)


def running_loads() -> int:
    """How many loads and waits are registered now (all threads)."""
    return len(_RUNNING)


def _cancel(selected: Callable[[int], bool]) -> bool:
    chosen = [cancel for ident, cancel in list(_RUNNING.values()) if selected(ident)]
    for cancel in chosen:
        cancel()
    return bool(chosen)


class _Registered:
    """``with _Registered(cancel):`` — ``cancel`` is registered for this thread while the block runs."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._token = next(_TOKENS)
        self._entry = (threading.get_ident(), cancel)

    def __enter__(self) -> None:
        _RUNNING[self._token] = self._entry

    def __exit__(self, *exc: object) -> None:
        _RUNNING.pop(self._token, None)


def sleep_cancellable(seconds: float) -> None:
    """Sleep ``seconds``; ``KeyboardInterrupt`` at once when cancelled meanwhile (see the contract)."""
    woken = threading.Event()
    with _Registered(woken.set):
        woken.wait(max(0.0, seconds))
    if woken.is_set():
        raise KeyboardInterrupt


def run_cancellable(
    coro: Coroutine[Any, Any, _R], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> _R:
    """Run ``coro`` to its end on a new event loop; ``KeyboardInterrupt`` when it was cancelled (even if the
    coroutine swallowed the cancellation)."""
    interrupted = False
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        task: asyncio.Task[_R] | None = None

        async def main() -> _R:
            nonlocal task
            task = asyncio.current_task()
            if interrupted and task is not None:  # cancelled before it started: at its first await
                task.cancel()
            return await coro

        def cancel() -> None:
            nonlocal interrupted
            interrupted = True
            if task is not None:
                loop.call_soon_threadsafe(task.cancel)  # also wakes a loop asleep in epoll

        try:
            with _Registered(cancel):
                result = runner.run(main())
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            if task is None:
                coro.close()  # interrupted before it started: no "never awaited" warning
    if interrupted:
        raise KeyboardInterrupt
    return result


__all__ = [
    "cancel_running_load",
    "cancel_thread_load",
    "run_cancellable",
    "running_loads",
    "sleep_cancellable",
]
