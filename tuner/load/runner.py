"""Run a load plan against a server: warm-up, then a request count or a duration; returns raw records.

Traffic is a sequence of :class:`~tuner.load.conversation.Conversation`; a one-turn conversation is one
request. Contract of :func:`offer_load`:

* conversation ``j`` (warm-up ones first, then measured ones, in the order they start) is
  ``conversations[j % len(conversations)]``: pass enough conversations that none is sent twice (a repeat
  would hit the prefix cache). Its records carry ``conversation=j`` and ``turn`` (0 for the first);
  :func:`conversations_used` says how many a run started;
* a phase of ``n`` requests counts requests (turns): a conversation starts only while fewer than ``n``
  are reserved, and reserves its turns (the last one may be cut to fit), so exactly ``n`` are sent unless
  the duration, a stop or a failure ends it first;
* a conversation's later turn is sent once the previous turn's reply is complete and its ``think_s`` has
  passed, carrying the history (:mod:`tuner.load.session`: the server's own replies, collected only for a
  turn that has a later one); a failed turn ends its conversation;
* warm-up requests run first, at the plan's concurrency (or 1), with no think time, are awaited, and
  come back with ``warmup=True`` (metrics ignore them);
* closed loop (``concurrency`` only): that many conversations are in flight (a thinking user holds its
  slot) until the count is reached or the duration has passed. Open loop (``arrivals``): conversations
  start as the arrival process says (:mod:`tuner.load.arrivals`, seeded by ``plan.seed``; a trace replays
  the conversations' ``at_s``); with ``concurrency`` too, at most that many conversations are in flight and
  a late one starts when a slot frees;
* with ``duration_s`` no request is *sent* after the duration; in-flight ones are awaited. With both
  ``requests`` and ``duration_s`` whichever ends first ends the phase;
* records come back in the order requests were issued, warm-up first. A failed request is a record with
  ``error`` set; nothing here raises for one;
* ``stop`` set: in-flight requests are cancelled and the records so far are returned, the cancelled ones
  with ``error == "cancelled"``. Cancelling ``offer_load`` itself cancels every request and propagates;
* pacing, think times and durations use the event loop's clock; ``clock`` only stamps records;
* ``watch`` given: every ``watch_interval_s`` of the measured phase ``watch.settled(records, clock())`` is
  asked whether the phase's outcome is settled (:class:`tuner.measure.watch.StepWatch`); once it answers,
  the run stops as with ``stop`` (in-flight requests cancelled, their records ``cancelled``);
* ``observer.request_done(record, done, total)`` is called as each request finishes, warm-up ones
  included (``record.warmup`` tells); ``done``/``total`` count requests within the phase (``total`` is
  ``None`` for a duration). An exception from the observer stops the run and propagates.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import numpy as np

from tuner.load.arrivals import Arrivals
from tuner.load.client import Target, send_request
from tuner.load.conversation import Conversation
from tuner.load.prompts import Prompt
from tuner.load.records import CANCELLED, RequestRecord
from tuner.load.session import History


@dataclass(frozen=True)
class LoadPlan:
    """What load to offer. Give ``concurrency`` and/or ``arrivals``, and ``requests`` and/or
    ``duration_s``; ``ValueError`` otherwise. Output lengths come with each turn."""

    concurrency: int | None = None
    arrivals: Arrivals | None = None
    requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    request_timeout_s: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.concurrency is None and self.arrivals is None:
            raise ValueError("give concurrency, arrivals or both")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
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


def conversations_used(records: Sequence[RequestRecord]) -> int:
    """How many conversations a run of :func:`offer_load` started (from its records)."""
    return max((r.conversation for r in records), default=-1) + 1


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
    conversations: Sequence[Conversation],
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
    if not conversations:
        raise ValueError("no conversations to send")
    own = session is None
    sess = new_session() if session is None else session
    run = _Run(target, conversations, plan, clock, sess, observer)
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


class _Budget:
    """How many requests a phase may still reserve (``None``: no count, a duration ends it)."""

    __slots__ = ("left",)

    def __init__(self, n: int | None) -> None:
        self.left = n

    def reserve(self, turns: int) -> int:
        """Reserve up to ``turns`` requests; returns how many (0 once the count is spent)."""
        if self.left is None:
            return turns
        k = min(turns, self.left)
        self.left -= k
        return k


class _Run:
    """The state of one :func:`offer_load`: issued records and the ones still in flight."""

    def __init__(
        self,
        target: Target,
        conversations: Sequence[Conversation],
        plan: LoadPlan,
        clock: Callable[[], float],
        session: aiohttp.ClientSession,
        observer: LoadObserver | None,
    ) -> None:
        self.target = target
        self.conversations = conversations
        self.plan = plan
        self.clock = clock
        self.session = session
        self.observer = observer
        self.records: list[RequestRecord] = []
        self.in_flight: set[int] = set()  # indices into ``records``
        self.done = 0
        self.total: int | None = None
        self.started = 0  # conversations started so far

    async def all(self) -> None:
        p = self.plan
        if p.warmup_requests:
            await self.phase(p.warmup_requests, p.concurrency or 1, None, None, warmup=True)
        if p.requests != 0:
            await self.phase(p.requests, p.concurrency, p.arrivals, p.duration_s, warmup=False)

    async def phase(
        self,
        n: int | None,
        concurrency: int | None,
        arrivals: Arrivals | None,
        duration: float | None,
        *,
        warmup: bool,
    ) -> None:
        self.done, self.total = 0, n
        deadline = None if duration is None else asyncio.get_running_loop().time() + duration
        budget = _Budget(n)
        if arrivals is None:
            assert concurrency is not None
            await self.closed_loop(budget, concurrency, deadline, warmup)
        else:
            await self.open_loop(budget, arrivals, concurrency, deadline, warmup)

    def take(self, budget: _Budget) -> tuple[int, Conversation, int] | None:
        """The next conversation, its index and how many of its turns to send; None once the count is spent."""
        if budget.left == 0:
            return None
        j = self.started
        conv = self.conversations[j % len(self.conversations)]
        self.started += 1
        return j, conv, budget.reserve(len(conv.turns))

    async def closed_loop(
        self, budget: _Budget, concurrency: int, deadline: float | None, warmup: bool
    ) -> None:
        loop = asyncio.get_running_loop()

        async def worker() -> None:
            while deadline is None or loop.time() < deadline:
                job = self.take(budget)
                if job is None:
                    return
                await self.converse(*job, deadline, warmup)

        workers = concurrency if budget.left is None else min(concurrency, budget.left)
        async with asyncio.TaskGroup() as tg:
            for _ in range(workers):
                tg.create_task(worker())

    def _upcoming_at(self) -> Iterator[float | None]:
        """The ``at_s`` of the conversations in the order this run will start them."""
        n, first = len(self.conversations), self.started
        return (self.conversations[(first + i) % n].at_s for i in itertools.count())

    async def open_loop(
        self,
        budget: _Budget,
        arrivals: Arrivals,
        concurrency: int | None,
        deadline: float | None,
        warmup: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(concurrency) if concurrency else None
        offsets = arrivals.offsets(np.random.default_rng(self.plan.seed), self._upcoming_at())
        start = loop.time()

        async def send(job: tuple[int, Conversation, int]) -> None:
            try:
                await self.converse(*job, deadline, warmup)
            finally:
                if slots is not None:
                    slots.release()

        async with asyncio.TaskGroup() as tg:
            for offset in offsets:
                if budget.left == 0:
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
                job = self.take(budget)
                assert job is not None
                tg.create_task(send(job))

    async def converse(
        self, j: int, conv: Conversation, turns: int, deadline: float | None, warmup: bool
    ) -> None:
        """Send the first ``turns`` turns of conversation ``j`` in order (see the module docstring)."""
        loop = asyncio.get_running_loop()
        history = History(self.target.api) if turns > 1 else None
        for t in range(turns):
            turn = conv.turns[t]
            if t:
                if turn.think_s > 0 and not warmup:
                    await asyncio.sleep(turn.think_s)
                if deadline is not None and loop.time() >= deadline:
                    return
            prompt = history.prompt(turn.prompt) if history is not None else turn.prompt
            reply: list[str] | None = [] if t + 1 < turns else None
            rec = await self.one(prompt, turn.output_tokens, j, t, warmup, reply)
            if not rec.ok:
                return
            if history is not None and reply is not None:
                history.answered(prompt, "".join(reply), rec.output_tokens or turn.output_tokens)

    async def one(
        self, prompt: Prompt, max_tokens: int, conv: int, turn: int, warmup: bool, reply: list[str] | None
    ) -> RequestRecord:
        k = len(self.records)
        rec = RequestRecord(  # send_request stamps send_time before any await
            send_time=math.nan, warmup=warmup, expected_output_tokens=max_tokens, conversation=conv, turn=turn
        )
        self.records.append(rec)
        self.in_flight.add(k)
        await send_request(
            self.session,
            self.target,
            prompt,
            max_tokens,
            clock=self.clock,
            timeout_s=self.plan.request_timeout_s,
            warmup=warmup,
            record=rec,
            reply=reply,
        )
        self.in_flight.discard(k)
        self.done += 1
        if self.observer is not None:
            self.observer.request_done(rec, self.done, self.total)
        return rec

    def mark_cancelled(self) -> None:
        for k in self.in_flight:
            rec = self.records[k]
            if rec.error is None:
                rec.error = CANCELLED
        self.in_flight.clear()
