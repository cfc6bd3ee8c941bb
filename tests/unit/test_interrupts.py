"""tuner.load.cancel: a cancelled load ends with KeyboardInterrupt after its cleanup ran."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from tuner.load.cancel import (
    cancel_running_load,
    cancel_thread_load,
    run_cancellable,
    running_loads,
    sleep_cancellable,
)


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


class _Slot(threading.Thread):
    """A parallel trial's thread: runs a load that never ends by itself, records how it ended."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.ended = ""
        self.cleaned = False

    def run(self) -> None:
        async def hung() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                self.cleaned = True

        try:
            run_cancellable(hung())
            self.ended = "returned"
        except KeyboardInterrupt:
            self.ended = "interrupted"


def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_two_concurrent_loads_one_cancelled_alone_then_ctrl_c_cancels_the_other() -> None:
    a, b = _Slot("slot-a"), _Slot("slot-b")
    a.start()
    b.start()
    _until(lambda: running_loads() == 2)
    assert running_loads() == 2
    assert a.ident is not None and cancel_thread_load(a.ident)  # trial a's own cancel
    a.join(10)
    assert a.ended == "interrupted" and a.cleaned
    time.sleep(0.2)
    assert b.is_alive() and b.ended == ""  # the other slot's load goes on
    assert running_loads() == 1
    assert cancel_thread_load(a.ident) is False  # nothing of a's left
    assert cancel_running_load() is True  # Ctrl-C: every running load
    b.join(10)
    assert b.ended == "interrupted" and b.cleaned
    assert running_loads() == 0 and cancel_running_load() is False


def test_ctrl_c_cancels_every_concurrent_load() -> None:
    slots = [_Slot(f"slot-{i}") for i in range(3)]
    for s in slots:
        s.start()
    _until(lambda: running_loads() == 3)
    assert cancel_running_load() is True
    for s in slots:
        s.join(10)
    assert [s.ended for s in slots] == ["interrupted"] * 3


def test_a_cancelled_wait_ends_at_once_with_keyboard_interrupt() -> None:
    threading.Timer(0.1, cancel_running_load).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sleep_cancellable(60)
    assert time.monotonic() - start < 10
    sleep_cancellable(0.01)  # not cancelled: returns
    assert running_loads() == 0
