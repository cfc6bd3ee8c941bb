"""tuner.measure.steps: the arrival process at a level, what a step stores of its load, conversations needed."""

from __future__ import annotations

from typing import Any

from tuner.config.spec import StudySpec, spec_from_dict
from tuner.load.arrivals import Arrivals
from tuner.measure.steps import _load_info, arrivals_at, conversations_needed, load_plan, mean_turns

W = {"input_tokens": 8, "output_tokens": 8, "requests": 40, "warmup_requests": 4}


def spec(**workload: Any) -> StudySpec:
    return spec_from_dict({"name": "s", "model": "m", "workload": {**W, **workload}})


def test_closed_loop_has_no_arrivals() -> None:
    w = spec(concurrency=4).workload
    assert arrivals_at(w, None) is None and arrivals_at(w, 8) is None
    assert _load_info(load_plan(w, 8, None, 32, 0)) == {"concurrency": 8, "requests": 32}


def test_rate_levels_keep_the_arrival_kind() -> None:
    w = spec(request_rate=2.0, arrivals={"kind": "gamma", "burstiness": 0.5}).workload
    assert arrivals_at(w, None) == Arrivals("gamma", rate=2.0, burstiness=0.5)
    a = arrivals_at(w, 8.0)
    assert a == Arrivals("gamma", rate=8.0, burstiness=0.5)
    assert _load_info(load_plan(w, None, a, 32, 0)) == {
        "request_rate": 8.0, "arrivals": "gamma", "burstiness": 0.5, "requests": 32
    }  # fmt: skip
    poisson = arrivals_at(spec(request_rate=2.0).workload, 3.0)
    assert _load_info(load_plan(w, None, poisson, 32, 0)) == {"request_rate": 3.0, "requests": 32}


def test_one_turn_traffic_needs_a_conversation_per_request() -> None:
    s = spec(concurrency=4, mode="fixed")
    assert conversations_needed(s) == 44 and conversations_needed(s, mean_turns(s.workload)) == 44


def test_sessions_need_fewer_conversations_with_a_margin() -> None:
    s = spec(concurrency=4, mode="fixed", sessions={"turns": 4, "think_time_s": 0.5})
    assert mean_turns(s.workload) == 4.0
    assert conversations_needed(s, 4.0) == 14  # ceil(44 / 4 x 1.25)


def test_trace_levels_are_speed_ups() -> None:
    w = spec(
        input_tokens=None,
        output_tokens=None,
        dataset={"path": "log.csv", "format": "lengths"},
        arrivals={"kind": "trace", "scale": 3.0},
    ).workload
    assert arrivals_at(w, None) == Arrivals("trace", scale=3.0)
    assert arrivals_at(w, 0.5) == Arrivals("trace", scale=0.5)
    assert _load_info(load_plan(w, None, Arrivals("trace", scale=0.5), 32, 0)) == {
        "arrivals": "trace", "trace_scale": 0.5, "requests": 32
    }  # fmt: skip
