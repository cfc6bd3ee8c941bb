"""TrialResult -> objective values and constraints; failures are told as infeasible, with finite values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tuner.config.spec import StudySpec, spec_from_dict
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.search.objectives import FAILED_KEY, FAILURE_VIOLATION, constraint_keys, evaluate, penalty

FAILURES = ("oom", "invalid_config", "startup_timeout", "crashed", "load_errors", "infeasible")


def make(**extra: Any) -> StudySpec:
    base: dict[str, Any] = {
        "name": "s",
        "model": "m",
        "workload": {"input_tokens": 8, "output_tokens": 8, "requests": 4, "request_timeout_s": 120},
        "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 100},
    }
    base.update(extra)
    return spec_from_dict(base)


def ok(thr: float, ttft: float, itl: float) -> TrialResult:
    s = Summary.from_dict({"output_throughput_tok_s": thr, "ttft_ms": {"p99": ttft}, "itl_ms": {"p99": itl}})
    return TrialResult(status="ok", summary=s)


def test_measured_trial_values_and_relative_constraints() -> None:
    ev = evaluate(make(), ok(500.0, 1500.0, 120.0))
    assert ev.values == [500.0, 1500.0]
    assert ev.constraints == pytest.approx({"ttft_p99": -0.25, "itl_p99": 0.2, FAILED_KEY: 0.0})
    assert not ev.feasible and ev.failure is None
    assert evaluate(make(), ok(500.0, 1500.0, 90.0)).feasible


def test_violation_is_capped_below_a_failure() -> None:
    ev = evaluate(make(), ok(1.0, 1e9, 1.0))
    assert ev.constraints["ttft_p99"] == FAILURE_VIOLATION


@pytest.mark.parametrize("status", FAILURES)
def test_failures_are_complete_infeasible_and_finite(status: str) -> None:
    spec = make()
    ev = evaluate(spec, TrialResult(status=status, message="boom"))
    assert ev.failure == status
    assert not ev.feasible
    assert ev.constraints[FAILED_KEY] == 1.0
    assert list(ev.constraints) == constraint_keys(spec)
    assert all(math.isfinite(v) for v in ev.values)
    assert ev.values[0] == 0.0  # throughput
    assert ev.values[1] == (1 + FAILURE_VIOLATION) * 2000  # latency with an SLO limit


def test_latency_without_limit_gets_the_request_timeout() -> None:
    spec = make(objectives=["maximize output_throughput", "minimize e2e_p99"])
    assert penalty(spec, "oom").values == [0.0, 120_000.0]


def test_no_slo_still_marks_failures_infeasible() -> None:
    spec = make(slo={})
    assert constraint_keys(spec) == [FAILED_KEY]
    assert evaluate(spec, ok(1.0, 1.0, 1.0)).feasible
    assert not evaluate(spec, TrialResult(status="crashed")).feasible


@pytest.mark.parametrize(
    "result",
    [TrialResult(status="ok"), ok(float("nan"), 1.0, 1.0), ok(1.0, float("nan"), 1.0)],
)
def test_ok_without_a_usable_measurement_is_a_failure(result: TrialResult) -> None:
    ev = evaluate(make(), result)
    assert ev.failure == "no_measurement" and not ev.feasible


def test_interrupted_is_not_evaluated() -> None:
    with pytest.raises(ValueError, match="interrupted"):
        evaluate(make(), TrialResult(status="interrupted"))


def test_single_objective() -> None:
    spec = make(objectives=["maximize output_throughput"])
    assert evaluate(spec, ok(7.0, 1.0, 1.0)).values == [7.0]
    assert penalty(spec, "oom").values == [0.0]


def test_a_trial_scored_at_a_step_cut_short_is_infeasible() -> None:
    """No step passed and the scored one was cut short over ITL p99: the figures of its finished
    requests may lie within the limit (seen on the H200: 49.5 ms under 50), the trial is still infeasible."""
    cut = Summary.from_dict(
        {
            "output_throughput_tok_s": 3125.0,
            "ttft_ms": {"p99": 793.0},
            "itl_ms": {"p99": 49.5},
            "pruned": "itl_p99 settled over 50 ms: 285 of 24480 samples already exceed it",
        }
    )
    ev = evaluate(make(slo={"ttft_p99_ms": 1000, "itl_p99_ms": 50}), TrialResult(status="ok", summary=cut))
    assert ev.constraints["itl_p99"] > 0 and ev.constraints["ttft_p99"] < 0
    assert not ev.feasible and ev.values[0] == 3125.0
