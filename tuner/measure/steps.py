"""The measured phase over a running server: one fixed load, or the capacity steps. Async I/O over pure rules.

In capacity mode the levels come from :func:`tuner.measure.capacity.next_level` (the one rule): a
concurrency (closed loop), a rate of conversation starts (open loop: poisson, constant or gamma
arrivals) or, for a replayed trace, its speed-up factor. Each step is watched by
:class:`tuner.measure.watch.StepWatch` and ends early once its verdict is settled, and the run is
concluded by :func:`tuner.measure.capacity.conclude`. Each step starts at the first conversation not sent
yet, so no step replays an earlier prompt into the prefix cache; a step's request count counts requests
(turns), not conversations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tuner.config.spec import StudySpec
from tuner.config.workload import Workload, length_mean
from tuner.load.arrivals import Arrivals
from tuner.load.client import Target
from tuner.load.conversation import Conversation
from tuner.load.runner import LoadPlan, conversations_used, offer_load
from tuner.measure import capacity
from tuner.measure.metrics import Summary, summarize
from tuner.measure.watch import StepWatch
from tuner.progress import Reporter


async def measure_steps(
    spec: StudySpec,
    target: Target,
    conversations: Sequence[Conversation],
    rep: Reporter,
    alive: Callable[[], bool],
    session: aiohttp.ClientSession,
    best_so_far: float | None,
) -> tuple[list[Summary], list[tuple[float, float]], capacity.Ladder | None]:
    """The measured phase: one fixed run, or the capacity steps :func:`tuner.measure.capacity.next_level`
    asks for (each watched so it ends once its verdict is settled). Returns the summaries, their time
    windows and, in capacity mode, the concluded :class:`~tuner.measure.capacity.Ladder`."""
    w = spec.workload
    slo = spec.slo.limits()
    if w.mode == "fixed":
        plan = load_plan(w, w.concurrency, arrivals_at(w, None), w.requests, w.seed)
        rep.phase("load", _describe(plan))
        t0 = time.monotonic()
        records = await offer_load(target, conversations, plan, session=session)
        return [summarize(records, slo, load=_load_info(plan))], [(t0, time.monotonic())], None
    is_rate = w.is_open_loop
    longest = max((t.output_tokens for c in conversations for t in c.turns), default=1)
    done: list[tuple[float, Summary]] = []
    windows: list[tuple[float, float]] = []
    sent = 0  # conversations started so far: each step starts at the first one not sent yet
    while True:
        level = capacity.next_level(w.capacity, is_rate, slo, w.max_failed_fraction, done, best_so_far)
        if isinstance(level, str):
            why: str | None = level
            break
        n = capacity.step_requests(level, w.requests, w.capacity, is_rate, slo)
        plan = load_plan(
            w,
            None if is_rate else max(1, int(level)),
            arrivals_at(w, level) if is_rate else None,
            None if w.duration_s else n,
            w.seed + len(done),
        )
        watch = StepWatch(slo, plan.requests or 0, longest)
        rep.phase("load", f"step {len(done) + 1}: {_describe(plan)}")
        t0 = time.monotonic()
        records = await offer_load(
            target,
            _rotate(conversations, sent),
            plan,
            session=session,
            watch=watch if w.capacity.prune and watch.active else None,
        )
        sent += conversations_used(records)
        windows.append((t0, time.monotonic()))
        done.append((level, summarize(records, slo, load=_load_info(plan), pruned=watch.reason)))
        if not alive():
            why = "the server stopped answering"
            break
    ladder = capacity.conclude(w.capacity, is_rate, slo, w.max_failed_fraction, done, why)
    return ladder.steps, windows, ladder


def arrivals_at(w: Workload, level: float | None) -> Arrivals | None:
    """The workload's arrival process at ``level`` (a rate, or a trace's scale; None: the file's own), or
    None in the closed loop."""
    if not w.is_open_loop:
        return None
    a = w.arrivals
    if a.kind == "trace":
        return Arrivals("trace", scale=a.scale if level is None else level)
    return Arrivals(a.kind, rate=w.request_rate if level is None else level, burstiness=a.burstiness)


def load_plan(
    w: Workload, concurrency: int | None, arrivals: Arrivals | None, requests: int | None, seed: int
) -> LoadPlan:
    """A measured load of the workload's shape at one level (duration and timeout from the file)."""
    return LoadPlan(
        concurrency=concurrency,
        arrivals=arrivals,
        requests=requests,
        duration_s=w.duration_s,
        request_timeout_s=w.request_timeout_s,
        seed=seed,
    )


def _rotate(conversations: Sequence[Conversation], offset: int) -> list[Conversation]:
    """The conversations from ``offset`` on (wrapping), so a step does not replay earlier steps' prompts."""
    k = offset % len(conversations) if conversations else 0
    return [*conversations[k:], *conversations[:k]]


#: requests built per trial at most (building costs ~1.5 ms per 1024-token prompt); beyond it they repeat
MAX_PROMPTS = 4096


def conversations_needed(spec: StudySpec, turns: float = 1.0) -> int:
    """Distinct conversations for one trial: warm-up plus every measured request, so no request repeats an
    earlier prompt (a repeat would hit the prefix cache and fake a fast TTFT). Requests are counted and
    divided by ``turns`` (the sessions' mean turns per conversation) with a quarter more for the
    spread of turns. Duration-bounded loads are estimated (rate x duration, or 1024); refinement steps
    count as large as the ladder's largest; past :data:`MAX_PROMPTS` requests conversations repeat."""
    w = spec.workload
    requests = w.warmup_requests + _measured_requests(spec, turns)
    if turns <= 1.0:
        return max(1, min(requests, MAX_PROMPTS))
    return max(1, math.ceil(min(requests, MAX_PROMPTS) / turns * 1.25))


def mean_turns(w: Workload, base_dir: Path | None = None) -> float:
    """Turns per conversation on average (1 without sessions)."""
    return 1.0 if w.sessions is None else max(1.0, length_mean(w.sessions.turns, base_dir))


def _measured_requests(spec: StudySpec, turns: float) -> int:
    """Measured requests of one trial (a rate x a duration counts conversations: x ``turns``)."""
    w = spec.workload
    if w.mode == "fixed":
        if w.requests is not None:
            return w.requests
        if w.request_rate is not None and w.duration_s is not None:
            return int(w.request_rate * w.duration_s * 1.2 * turns) + 1
        return 1024
    is_rate = w.is_open_loop
    ladder = capacity.levels(w.capacity)
    slo = spec.slo.limits()
    if w.duration_s is not None:
        at_rate = w.request_rate is not None  # levels are rates (a trace's are speed-ups: unknown)
        per_step = [int(lv * w.duration_s * 1.2 * turns) + 1 if at_rate else 1024 // 4 for lv in ladder]
    else:
        per_step = [capacity.step_requests(lv, w.requests, w.capacity, is_rate, slo) for lv in ladder]
    # the ladder, then refinement steps (each no larger than the ladder's largest) up to max_steps
    refinement = max(0, w.capacity.max_steps - len(ladder)) if w.capacity.resolution else 0
    return sum(per_step) + refinement * max(per_step)


def _describe(plan: LoadPlan) -> str:
    how = f"concurrency {plan.concurrency}" if plan.arrivals is None else plan.arrivals.describe()
    size = f"{plan.requests} requests" if plan.requests else f"{plan.duration_s:g} s"
    return f"{how}, {size}"


def _load_info(plan: LoadPlan) -> dict[str, Any]:
    """What a step offered: ``concurrency``; ``request_rate`` (and ``arrivals`` unless Poisson, with
    ``burstiness`` for gamma); a trace's ``trace_scale``; ``requests`` or ``duration_s``."""
    a = plan.arrivals
    info: dict[str, Any] = {"concurrency": plan.concurrency}
    if a is not None and a.kind == "trace":
        info.update(arrivals="trace", trace_scale=a.scale)
    elif a is not None:
        info["request_rate"] = a.rate
        if a.kind != "poisson":
            info["arrivals"] = a.kind
        if a.kind == "gamma":
            info["burstiness"] = a.burstiness
    info.update(requests=plan.requests, duration_s=plan.duration_s)
    return {k: v for k, v in info.items() if v is not None}
