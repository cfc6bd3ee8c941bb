from __future__ import annotations

from tuner.config.workload import CapacitySpec
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
    assert capacity.step_requests(2, 200, CapacitySpec(requests_per_step=5), False) == 6  # whole waves
    assert capacity.step_requests(2.5, 200, CapacitySpec(requests_per_step=5), True) == 5  # a rate: as given
    assert capacity.step_requests(38, None, CapacitySpec(requests_per_step=96), False) == 114
    # enough requests for the highest percentile the SLO names to have an interval
    assert capacity.step_requests(1, None, cap, False, {"ttft_p99": 1000.0}) == 299
    assert capacity.step_requests(1, None, cap, False, {"ttft_p90": 1000.0, "itl_p50": 9.0}) == 29
    assert capacity.step_requests(100, None, cap, False, {"ttft_p90": 1000.0}) == 400
    assert capacity.step_requests(1, None, CapacitySpec(requests_per_step=5), False, {"ttft_p99": 1.0}) == 5
    assert capacity.step_requests(7, None, cap, False, {"ttft_p99": 1.0}) == 301  # 299 rounded to 43 waves


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


def test_run_ladder_steps_until_the_stop_rule_and_scores_like_scored_step() -> None:
    script = {
        1: step(100, 200),
        2: step(180, 500),
        4: step(250, 1200),
        8: step(260, 2500),
        16: step(270, 900),
    }
    calls: list[tuple[int, float, int]] = []

    def measure(i: int, level: float, n: int) -> Summary:
        calls.append((i, level, n))
        return script[int(level)]

    cap = CapacitySpec(max_level=16, resolution=None)  # the ladder alone
    lad = capacity.run_ladder(cap, 40, False, SLO, 0.05, measure)
    assert [c[1] for c in calls] == [1, 2, 4, 8]  # 8 is 2.5x the TTFT limit: stop
    assert [c[2] for c in calls] == [capacity.step_requests(lv, 40, cap, False, SLO) for lv in (1, 2, 4, 8)]
    assert lad.levels == [1, 2, 4, 8] and lad.stop is not None and lad.stop.startswith("SLO broken")
    assert lad.scored == capacity.scored_step(lad.steps, SLO, 0.05) == 1 and lad.feasible


def test_run_ladder_without_a_feasible_step_scores_the_nearest_miss() -> None:
    lad = capacity.run_ladder(
        CapacitySpec(levels=[1, 2]), None, True, SLO, 0.05, lambda i, lv, n: step(100 * lv, 1500 * lv)
    )
    assert lad.scored == 0 and not lad.feasible
    assert lad.bracket is not None and lad.bracket.passing is None and not lad.bracket.within


def test_one_limit_rule_for_steps_and_requests() -> None:
    from tuner.measure import slo

    assert slo.within(50.0, 50.0) and not slo.within(50.01, 50.0) and not slo.within(float("nan"), 50.0)
    assert slo.ratio(float("nan"), 10.0) == float("inf") and slo.ratio(5.0, 10.0) == 0.5
    assert [slo.request_latency(n) for n in ("ttft_p99", "itl_p99", "tpot_p50", "e2e_p90", "goodput")] == [
        "ttft",
        "tpot",
        "tpot",
        "e2e",
        None,
    ]
    edge = step(100, 1000.0, 50.0)  # exactly at both limits: meets
    assert capacity.meets(edge, SLO, 0.05)
    assert not capacity.meets(step(100, 1000.0001, 50.0), SLO, 0.05)
