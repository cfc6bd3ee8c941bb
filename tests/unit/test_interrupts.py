"""tuner.load.cancel: a cancelled load ends with KeyboardInterrupt after its cleanup ran."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from tuner.load.cancel import cancel_running_load, run_cancellable


def test_no_load_running_means_nothing_to_cancel() -> None:
    assert cancel_running_load() is False


def test_a_finished_load_returns_its_value() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    assert run_cancellable(work()) == 7
    assert cancel_running_load() is False


def test_cancel_unwinds_the_load_then_raises_keyboard_interrupt() -> None:
    cleaned: list[str] = []

    async def hung() -> None:
        try:
            await asyncio.sleep(3600)  # a request that never ends
        finally:
            cleaned.append("finally")

    threading.Timer(0.1, cancel_running_load).start()
    with pytest.raises(KeyboardInterrupt):
        run_cancellable(hung())
    assert cleaned == ["finally"]
    assert cancel_running_load() is False


def test_a_load_that_swallows_the_cancellation_still_ends_interrupted() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    threading.Timer(0.1, cancel_running_load).start()
    with pytest.raises(KeyboardInterrupt):
        run_cancellable(stubborn())


def test_from_a_real_sigint_handler() -> None:
    """The study loop's handler: cancel the running load instead of raising inside the event loop."""

    def handler(signum: int, frame: object) -> None:
        if not cancel_running_load():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:

        async def hung() -> None:
            asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGINT)
            await asyncio.sleep(3600)

        with pytest.raises(KeyboardInterrupt):
            run_cancellable(hung())
    finally:
        signal.signal(signal.SIGINT, previous)


def test_with_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def hung() -> None:
        await asyncio.sleep(3600)

    threading.Timer(0.1, cancel_running_load).start()
    with pytest.raises(KeyboardInterrupt):
        run_cancellable(hung(), loop_factory=uvloop.new_event_loop)
