"""The measured phase over a running server: one fixed load, or the capacity steps. Async I/O over pure rules.

In capacity mode the levels come from :func:`tuner.measure.capacity.next_level` (the one rule), each step
is watched by :class:`tuner.measure.watch.StepWatch` and ends early once its verdict is settled, and the
run is concluded by :func:`tuner.measure.capacity.conclude`. Each step starts at the first prompt not sent
yet, so no step replays an earlier prompt into the prefix cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tuner.config.spec import StudySpec
from tuner.config.workload import Workload
from tuner.load.client import Target
from tuner.load.prompts import Prompt
from tuner.load.runner import LoadPlan, offer_load
from tuner.measure import capacity
from tuner.measure.metrics import Summary, summarize
from tuner.measure.watch import StepWatch
from tuner.progress import Reporter


async def measure_steps(
    spec: StudySpec,
    target: Target,
    prompts: list[Prompt],
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
        plan = load_plan(w, w.concurrency, w.request_rate, w.requests, w.seed)
        rep.phase("load", _describe(plan))
        t0 = time.monotonic()
        records = await offer_load(target, prompts, plan, session=session)
        return [summarize(records, slo, load=_load_info(plan))], [(t0, time.monotonic())], None
    is_rate = w.request_rate is not None
    done: list[tuple[float, Summary]] = []
    windows: list[tuple[float, float]] = []
    sent = 0  # measured requests so far: each step starts at the first prompt not sent yet
    while True:
        level = capacity.next_level(w.capacity, is_rate, slo, w.max_failed_fraction, done, best_so_far)
        if isinstance(level, str):
            why: str | None = level
            break
        n = capacity.step_requests(level, w.requests, w.capacity, is_rate, slo)
        plan = load_plan(
            w,
            None if is_rate else max(1, int(level)),
            level if is_rate else None,
            None if w.duration_s else n,
            w.seed + len(done),
        )
        watch = StepWatch(slo, plan.requests or 0, w.output_tokens)
        rep.phase("load", f"step {len(done) + 1}: {_describe(plan)}")
        t0 = time.monotonic()
        records = await offer_load(
            target,
            _rotate(prompts, sent),
            plan,
            session=session,
            watch=watch if w.capacity.prune and watch.active else None,
        )
        sent += sum(1 for r in records if not r.warmup)
        windows.append((t0, time.monotonic()))
        done.append((level, summarize(records, slo, load=_load_info(plan), pruned=watch.reason)))
        if not alive():
            why = "the server stopped answering"
            break
    ladder = capacity.conclude(w.capacity, is_rate, slo, w.max_failed_fraction, done, why)
    return ladder.steps, windows, ladder


def load_plan(
    w: Workload, concurrency: int | None, rate: float | None, requests: int | None, seed: int
) -> LoadPlan:
    """A measured load of the workload's shape at one level (duration and timeout from the file)."""
    return LoadPlan(
        output_tokens=w.output_tokens,
        concurrency=concurrency,
        request_rate=rate,
        requests=requests,
        duration_s=w.duration_s,
        request_timeout_s=w.request_timeout_s,
        seed=seed,
    )


def _rotate(prompts: list[Prompt], offset: int) -> list[Prompt]:
    """The prompts from ``offset`` on (wrapping), so a step does not replay the prompts of earlier steps."""
    k = offset % len(prompts) if prompts else 0
    return prompts[k:] + prompts[:k]


#: prompts built per trial at most (building costs ~1.5 ms per 1024-token prompt); beyond it they repeat
MAX_PROMPTS = 4096


def prompts_needed(spec: StudySpec) -> int:
    """Distinct prompts for one trial: warm-up plus every measured request, so no request repeats an earlier
    prompt (a repeat would hit the prefix cache and fake a fast TTFT). Duration-bounded loads are estimated
    (rate x duration, or 1024); refinement steps count as large as the ladder's largest; past
    :data:`MAX_PROMPTS` prompts repeat."""
    w = spec.workload
    if w.mode == "fixed":
        if w.requests is not None:
            measured = w.requests
        elif w.request_rate is not None and w.duration_s is not None:
            measured = int(w.request_rate * w.duration_s * 1.2) + 1
        else:
            measured = 1024
    else:
        is_rate = w.request_rate is not None
        ladder = capacity.levels(w.capacity)
        slo = spec.slo.limits()
        if w.duration_s is not None:
            per_step = [int(lv * w.duration_s * 1.2) + 1 if is_rate else 1024 // 4 for lv in ladder]
        else:
            per_step = [capacity.step_requests(lv, w.requests, w.capacity, is_rate, slo) for lv in ladder]
        # the ladder, then refinement steps (each no larger than the ladder's largest) up to max_steps
        refinement = max(0, w.capacity.max_steps - len(ladder)) if w.capacity.resolution else 0
        measured = sum(per_step) + refinement * max(per_step)
    return max(1, min(w.warmup_requests + measured, MAX_PROMPTS))


def _describe(plan: LoadPlan) -> str:
    how = f"concurrency {plan.concurrency}" if plan.request_rate is None else f"{plan.request_rate:g} req/s"
    size = f"{plan.requests} requests" if plan.requests else f"{plan.duration_s:g} s"
    return f"{how}, {size}"


def _load_info(plan: LoadPlan) -> dict[str, Any]:
    return {
        k: v
        for k, v in {
            "concurrency": plan.concurrency,
            "request_rate": plan.request_rate,
            "requests": plan.requests,
            "duration_s": plan.duration_s,
        }.items()
        if v is not None
    }
