"""In-trial pruning against a fake streaming server: a step whose TTFT p99 is settled over its limit ends
early, and the time it takes is measured against the full step's."""

from __future__ import annotations

import time

from tests.fakes.sse_server import FakeConfig, serve_fake
from tuner.load.client import Target
from tuner.load.conversation import Conversation, Turn
from tuner.load.prompts import Prompt
from tuner.load.runner import LoadPlan, offer_load
from tuner.measure.capacity import meets
from tuner.measure.metrics import summarize
from tuner.measure.watch import StepWatch

PROMPTS = [Conversation((Turn(Prompt(text=f"p{i} " * 8, messages=None, n_tokens=9), 4),)) for i in range(400)]
SLO = {"ttft_p99": 100.0}


async def test_a_breaking_step_stops_at_a_fraction_of_its_length() -> None:
    """Every request's first token takes 150 ms against a 100 ms limit: 4 slow requests of 300 settle the
    p99, so the step ends long before its 300 requests at concurrency 4 (about 300 / 4 x 0.2 s = 15 s)."""
    plan = LoadPlan(concurrency=4, requests=300)
    async with serve_fake(FakeConfig(first_token_delay_s=0.15, token_delay_s=0.01)) as srv:
        target = Target(srv.url, "fake-model")
        watch = StepWatch(SLO, plan.requests or 0, 4)
        t0 = time.monotonic()
        records = await offer_load(target, PROMPTS, plan, watch=watch, watch_interval_s=0.02)
        pruned_s = time.monotonic() - t0
        full = LoadPlan(concurrency=4, requests=40)  # a tenth, timed for the estimate
        t1 = time.monotonic()
        await offer_load(target, PROMPTS, full)
        full_s = (time.monotonic() - t1) * 300 / 40
    s = summarize(records, SLO, pruned=watch.reason)
    print(
        f"pruned step: {pruned_s:.2f} s, full step (est.): {full_s:.2f} s ({100 * pruned_s / full_s:.0f} %)"
    )
    assert watch.reason is not None and s.pruned == watch.reason
    assert not meets(s, SLO, 0.05)  # a pruned step never passes
    assert s.failed == 0  # the cut requests are neither completed nor failed
    assert s.completed < 40
    assert pruned_s <= 0.4 * full_s, (pruned_s, full_s)


async def test_a_passing_step_is_not_cut() -> None:
    plan = LoadPlan(concurrency=4, requests=40)
    async with serve_fake(FakeConfig(first_token_delay_s=0.01)) as srv:
        watch = StepWatch(SLO, 40, 4)
        records = await offer_load(Target(srv.url, "fake-model"), PROMPTS, plan, watch=watch)
    assert watch.reason is None and sum(r.ok for r in records) == 40
