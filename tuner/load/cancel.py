"""Ctrl-C while a trial's load runs on an event loop: cancel the load, do not raise inside the loop.

A ``KeyboardInterrupt`` raised by a signal handler lands wherever the main thread happens to be; inside an
event loop's callback (uvloop's in particular) it can be reported and swallowed, leaving the load waiting on
requests that never finish. So the study loop's SIGINT handler calls :func:`cancel_running_load` first:
when :func:`run_cancellable` is running a coroutine, its task is cancelled (thread-safely, as ``asyncio.Runner``
does for its own handler) and :func:`run_cancellable` raises ``KeyboardInterrupt`` once the coroutine has unwound
(sessions closed, ``finally`` blocks run). Outside :func:`run_cancellable` it returns False and the handler raises
``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_R = TypeVar("_R")

#: cancels the coroutine :func:`run_cancellable` is running (None when none runs)
_cancel: Callable[[], None] | None = None


def cancel_running_load() -> bool:
    """Cancel the load :func:`run_cancellable` is running; False when none runs. Safe to call from a signal handler."""
    cancel = _cancel
    if cancel is None:
        return False
    cancel()
    return True


def run_cancellable(
    coro: Coroutine[Any, Any, _R], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> _R:
    """Run ``coro`` to its end on a new event loop; ``KeyboardInterrupt`` when :func:`cancel_running_load`
    cancelled it (even if the coroutine swallowed the cancellation)."""
    global _cancel
    interrupted = False
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        task: asyncio.Task[_R] | None = None

        async def main() -> _R:
            nonlocal task
            task = asyncio.current_task()
            return await coro

        def cancel() -> None:
            nonlocal interrupted
            interrupted = True
            if task is not None:
                loop.call_soon_threadsafe(task.cancel)  # also wakes a loop asleep in epoll

        _cancel = cancel
        try:
            result = runner.run(main())
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            _cancel = None
            if task is None:
                coro.close()  # interrupted before it started: no "never awaited" warning
    if interrupted:
        raise KeyboardInterrupt
    return result


__all__ = ["cancel_running_load", "run_cancellable"]
