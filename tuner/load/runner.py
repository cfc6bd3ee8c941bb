"""Run a load plan against a server: warm-up, then a request count or a duration; returns raw records.

Contract of :func:`offer_load`:

* request ``k`` (warm-up requests first, then measured ones) uses ``prompts[k % len(prompts)]``: pass at
  least ``warmup_requests + requests`` prompts so no prompt is sent twice (a repeat would hit the prefix
  cache);
* warm-up requests run first, at the plan's concurrency (or 1), are awaited, and come back with
  ``warmup=True`` (metrics ignore them);
* closed loop (``concurrency`` only): that many requests are in flight until the count is reached or the
  duration has passed. Open loop (``request_rate``): Poisson arrivals (seeded by ``plan.seed``); with
  ``concurrency`` too, at most that many are in flight and a late request is sent when a slot frees;
* with ``duration_s`` no request is *sent* after the duration; in-flight ones are awaited. With both
  ``requests`` and ``duration_s`` whichever ends first ends the phase;
* records come back in the order requests were issued, warm-up first. A failed request is a record with
  ``error`` set; nothing here raises for one;
* ``stop`` set: in-flight requests are cancelled and the records so far are returned, the cancelled ones
  with ``error == "cancelled"``. Cancelling ``offer_load`` itself cancels every request and propagates;
* pacing and durations use the event loop's clock; ``clock`` only stamps records;
* ``watch`` given: every ``watch_interval_s`` of the measured phase ``watch.settled(records, clock())`` is
  asked whether the phase's outcome is settled (:class:`tuner.measure.watch.StepWatch`); once it answers,
  the run stops as with ``stop`` (in-flight requests cancelled, their records ``cancelled``);
* ``observer.request_done(record, done, total)`` is called as each request finishes, warm-up ones
  included (``record.warmup`` tells); ``done``/``total`` count within the phase (``total`` is ``None`` for
  a duration). An exception from the observer stops the run and propagates.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import numpy as np

from tuner.load.arrivals import poisson_offsets
from tuner.load.client import Target, send_request
from tuner.load.prompts import Prompt
from tuner.load.records import CANCELLED, RequestRecord


@dataclass(frozen=True)
class LoadPlan:
    """What load to offer. Give ``concurrency`` and/or ``request_rate``, and ``requests`` and/or
    ``duration_s``; ``ValueError`` otherwise."""

    output_tokens: int
    concurrency: int | None = None
    request_rate: float | None = None
    requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    request_timeout_s: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.output_tokens < 1:
            raise ValueError("output_tokens must be at least 1")
        if self.concurrency is None and self.request_rate is None:
            raise ValueError("give concurrency, request_rate or both")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError("request_rate must be positive")
        if self.requests is None and self.duration_s is None:
            raise ValueError("give requests, duration_s or both")
        if self.requests is not None and self.requests < 0:
            raise ValueError("requests must not be negative")
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError("duration_s must be a positive number")
        if self.warmup_requests < 0:
            raise ValueError("warmup_requests must not be negative")
        if not self.request_timeout_s > 0:
            raise ValueError("request_timeout_s must be positive")


class Watch(Protocol):
    """Says, from the records so far, whether a load's outcome is already settled (then why)."""

    def settled(self, records: Sequence[RequestRecord], now: float) -> str | None: ...


class LoadObserver(Protocol):
    """Told about each finished request (progress display, live log)."""

    def request_done(self, record: RequestRecord, done: int, total: int | None) -> None: ...


def new_session() -> aiohttp.ClientSession:
    """A session fit for load: unlimited connections, no aiohttp timeout (requests carry their own)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def offer_load(
    target: Target,
    prompts: Sequence[Prompt],
    plan: LoadPlan,
    *,
    clock: Callable[[], float] = time.perf_counter,
    session: aiohttp.ClientSession | None = None,
    observer: LoadObserver | None = None,
    stop: asyncio.Event | None = None,
    watch: Watch | None = None,
    watch_interval_s: float = 0.1,
) -> list[RequestRecord]:
    """Offer ``plan``'s load to ``target`` and return every request's record (see the module docstring).

    The runner opens (and closes) its own session only when none is passed.
    """
    if not prompts:
        raise ValueError("no prompts to send")
    own = session is None
    sess = new_session() if session is None else session
    run = _Run(target, prompts, plan, clock, sess, observer)
    watcher: asyncio.Task[None] | None = None
    if watch is not None:
        stop = stop or asyncio.Event()
        watcher = asyncio.ensure_future(_watch(run, watch, watch_interval_s, stop))
    try:
        await _until_stopped(run.all(), stop)
    except BaseExceptionGroup as group:  # from a TaskGroup: raise what went wrong, not the wrapper
        raise _first(group) from None
    finally:
        if watcher is not None:
            watcher.cancel()
        run.mark_cancelled()
        if own:
            await sess.close()
    return run.records


async def _watch(run: _Run, watch: Watch, interval_s: float, stop: asyncio.Event) -> None:
    """Ask ``watch`` about the measured records every ``interval_s``; set ``stop`` once it is settled."""
    while not stop.is_set():
        await asyncio.sleep(interval_s)
        measured = [r for r in run.records if not r.warmup]
        if measured and watch.settled(measured, run.clock()) is not None:
            stop.set()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    e = group.exceptions[0]
    return _first(e) if isinstance(e, BaseExceptionGroup) else e


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event | None) -> None:
    """Await ``work``; cancel it and return if ``stop`` is set first."""
    main = asyncio.ensure_future(work)
    if stop is None:
        await main
        return
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not main.done():
            main.cancel()
            await asyncio.wait({main})
    if not main.cancelled():
        main.result()  # re-raise what the run raised (an observer's bug, say)


class _Run:
    """The state of one :func:`offer_load`: issued records and the ones still in flight."""

    def __init__(
        self,
        target: Target,
        prompts: Sequence[Prompt],
        plan: LoadPlan,
        clock: Callable[[], float],
        session: aiohttp.ClientSession,
        observer: LoadObserver | None,
    ) -> None:
        self.target = target
        self.prompts = prompts
        self.plan = plan
        self.clock = clock
        self.session = session
        self.observer = observer
        self.records: list[RequestRecord] = []
        self.in_flight: set[int] = set()  # indices into ``records``
        self.done = 0
        self.total: int | None = None

    async def all(self) -> None:
        p = self.plan
        if p.warmup_requests:
            await self.phase(p.warmup_requests, p.concurrency or 1, None, None, warmup=True)
        if p.requests != 0:
            await self.phase(p.requests, p.concurrency, p.request_rate, p.duration_s, warmup=False)

    async def phase(
        self,
        n: int | None,
        concurrency: int | None,
        rate: float | None,
        duration: float | None,
        *,
        warmup: bool,
    ) -> None:
        self.done, self.total = 0, n
        deadline = None if duration is None else asyncio.get_running_loop().time() + duration
        if rate is None:
            assert concurrency is not None
            await self.closed_loop(n, concurrency, deadline, warmup)
        else:
            await self.open_loop(n, rate, concurrency, deadline, warmup)

    async def closed_loop(
        self, n: int | None, concurrency: int, deadline: float | None, warmup: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while (n is None or issued < n) and (deadline is None or loop.time() < deadline):
                issued += 1
                await self.one(warmup)

        workers = concurrency if n is None else min(concurrency, n)
        async with asyncio.TaskGroup() as tg:
            for _ in range(workers):
                tg.create_task(worker())

    async def open_loop(
        self, n: int | None, rate: float, concurrency: int | None, deadline: float | None, warmup: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(concurrency) if concurrency else None
        offsets = poisson_offsets(rate, np.random.default_rng(self.plan.seed))
        start = loop.time()

        async def send() -> None:
            try:
                await self.one(warmup)
            finally:
                if slots is not None:
                    slots.release()

        async with asyncio.TaskGroup() as tg:
            for i, offset in enumerate(offsets):
                if n is not None and i >= n:
                    break
                when = start + offset
                if deadline is not None and when >= deadline:
                    break
                if when > loop.time():
                    await asyncio.sleep(when - loop.time())
                if slots is not None:
                    await slots.acquire()
                    if deadline is not None and loop.time() >= deadline:
                        slots.release()
                        break
                tg.create_task(send())

    async def one(self, warmup: bool) -> None:
        k = len(self.records)
        rec = RequestRecord(send_time=math.nan, warmup=warmup)  # send_request stamps it before any await
        self.records.append(rec)
        self.in_flight.add(k)
        prompt = self.prompts[k % len(self.prompts)]
        await send_request(
            self.session,
            self.target,
            prompt,
            self.plan.output_tokens,
            clock=self.clock,
            timeout_s=self.plan.request_timeout_s,
            warmup=warmup,
            record=rec,
        )
        self.in_flight.discard(k)
        self.done += 1
        if self.observer is not None:
            self.observer.request_done(rec, self.done, self.total)

    def mark_cancelled(self) -> None:
        for k in self.in_flight:
            rec = self.records[k]
            if rec.error is None:
                rec.error = CANCELLED
        self.in_flight.clear()
