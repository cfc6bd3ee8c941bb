from __future__ import annotations

from tuner.config.spec import CapacitySpec
from tuner.measure import capacity
from tuner.measure.metrics import Distribution, Summary


def step(
    tput: float, ttft_p99: float, itl_p99: float = 10.0, completed: int = 10, failed: int = 0
) -> Summary:
    d = Distribution(ttft_p99 / 2, ttft_p99 / 2, ttft_p99, ttft_p99, completed)
    i = Distribution(itl_p99 / 2, itl_p99 / 2, itl_p99, itl_p99, completed)
    return Summary(1.0, completed, failed, int(tput), 0, tput, tput, completed, d, i, i, d)


def test_levels_doubling_and_given() -> None:
    assert capacity.levels(CapacitySpec(start=1, factor=2, max_level=16)) == [1, 2, 4, 8, 16]
    assert capacity.levels(CapacitySpec(levels=[8, 2, 4, 2])) == [2, 4, 8]


def test_step_requests() -> None:
    cap = CapacitySpec()
    assert capacity.step_requests(1, None, cap, False) == 8
    assert capacity.step_requests(16, None, cap, False) == 64
    assert capacity.step_requests(2, 200, cap, False) == 50
    assert capacity.step_requests(2, 200, CapacitySpec(requests_per_step=5), False) == 5


SLO = {"ttft_p99": 1000.0, "itl_p99": 50.0}


def test_scored_step_is_best_within_slo() -> None:
    steps = [step(100, 200), step(180, 500), step(250, 1200), step(260, 3000)]
    assert capacity.scored_step(steps, SLO, 0.05) == 1


def test_scored_step_when_none_meets_is_nearest() -> None:
    steps = [step(100, 1500), step(180, 3000)]
    assert capacity.scored_step(steps, SLO, 0.05) == 0


def test_failed_requests_disqualify_a_step() -> None:
    steps = [step(100, 200), step(300, 300, completed=8, failed=2)]
    assert capacity.scored_step(steps, SLO, 0.05) == 0


def test_should_stop() -> None:
    assert capacity.should_stop([step(100, 200)], SLO, 2.0, 0.05) is None
    assert "SLO broken" in (capacity.should_stop([step(100, 2500)], SLO, 2.0, 0.05) or "")
    assert capacity.should_stop([step(100, 200, completed=0, failed=5)], SLO, 2.0, 0.05) == "requests failed"
    flat = [step(100, 200), step(101, 900), step(102, 1100)]
    assert capacity.should_stop(flat, SLO, 2.0, 0.05) == "throughput saturated and SLO broken"
    assert capacity.should_stop(flat, {}, 2.0, 0.05) == "throughput saturated"
    growing = [step(100, 200), step(200, 300), step(400, 1100)]
    assert capacity.should_stop(growing, SLO, 2.0, 0.05) is None
