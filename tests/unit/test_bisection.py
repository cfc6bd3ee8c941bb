"""The capacity rule's refinement: bisection of the SLO boundary, its bracket, re-measured uncertain passes,
the step budget and the best-so-far cut. Scripted step outcomes, no server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.config.workload import CapacitySpec
from tuner.measure import capacity
from tuner.measure.metrics import Distribution, Summary

SLO = {"ttft_p99": 1000.0}


def step(tput: float, ttft_p99: float, *, uncertain: bool = False, pruned: str | None = None) -> Summary:
    d = Distribution(ttft_p99 / 2, ttft_p99 / 2, ttft_p99, ttft_p99, 300)
    check = {"estimate": ttft_p99, "low": ttft_p99 * 0.9, "high": ttft_p99 * 1.1}
    check["verdict"] = "uncertain" if uncertain else ("pass" if ttft_p99 <= 1000 else "fail")
    return Summary(
        1.0, 300, 0, int(tput), 0, tput, tput, 300, d, d, d, d, checks={"ttft_p99": check}, pruned=pruned
    )


def boundary(capacity_level: float, per_level: float = 100.0) -> Callable[[int, float, int], Summary]:
    """A server whose TTFT p99 crosses 1 s at ``capacity_level``; throughput grows with load."""

    def measure(i: int, level: float, n: int) -> Summary:
        ttft = 1000.0 * level / capacity_level
        return step(per_level * level, ttft)

    return measure


def test_concurrency_boundary_is_bracketed_to_the_resolution() -> None:
    cap = CapacitySpec(start=8, factor=2, max_level=256, stop_factor=1.2)
    lad = capacity.run_ladder(cap, None, False, SLO, 0.05, boundary(45))
    assert lad.levels[:3] == [8, 16, 32]  # the ladder
    b = lad.bracket
    assert b is not None and b.within and b.reason == "bracket within resolution"
    assert b.passing is not None and b.failing is not None and b.passing <= 45 < b.failing
    assert (b.failing - b.passing) / b.passing <= 0.05
    assert lad.feasible and lad.levels[lad.scored] == b.passing  # the highest measured passing step scores
    assert all(lv == int(lv) for lv in lad.levels)  # concurrencies stay whole


def test_the_old_ladder_alone_would_score_a_level_far_below() -> None:
    ladder_only = capacity.run_ladder(
        CapacitySpec(start=8, max_level=256, stop_factor=1.2, resolution=None),
        None,
        False,
        SLO,
        0.05,
        boundary(45),
    )
    refined = capacity.run_ladder(
        CapacitySpec(start=8, max_level=256, stop_factor=1.2), None, False, SLO, 0.05, boundary(45)
    )
    assert ladder_only.levels[ladder_only.scored] == 32 and ladder_only.bracket is not None
    assert not ladder_only.bracket.within
    assert 4500 / 1.05 <= refined.steps[refined.scored].output_throughput_tok_s <= 4500


def test_rates_are_bisected_on_a_continuous_axis() -> None:
    cap = CapacitySpec(start=1, factor=2, max_level=64, stop_factor=1.1, resolution=0.02)
    lad = capacity.run_ladder(cap, None, True, SLO, 0.05, boundary(5.3))
    b = lad.bracket
    assert b is not None and b.within and b.passing is not None and b.failing is not None
    assert b.passing <= 5.3 < b.failing and (b.failing - b.passing) / b.passing <= 0.02
    assert any(lv != int(lv) for lv in lad.levels)


def test_adjacent_concurrencies_end_the_refinement() -> None:
    lad = capacity.run_ladder(CapacitySpec(stop_factor=1.01), None, False, SLO, 0.05, boundary(2.5))
    b = lad.bracket
    assert b is not None and (b.passing, b.failing) == (2, 3) and b.within
    assert b.width == pytest.approx(0.5)


def test_the_step_budget_bounds_the_refinement_and_says_so() -> None:
    cap = CapacitySpec(start=1, factor=2, max_level=1024, stop_factor=1.01, max_steps=9)
    lad = capacity.run_ladder(cap, None, False, SLO, 0.05, boundary(300))
    assert len(lad.steps) == 9
    assert lad.bracket is not None and not lad.bracket.within
    assert lad.stop == "step budget spent (9 steps)" == lad.bracket.reason


def test_no_refinement_when_the_bracket_cannot_beat_the_best_so_far() -> None:
    cap = CapacitySpec(start=8, factor=2, max_level=256, stop_factor=1.2)
    lad = capacity.run_ladder(cap, None, False, SLO, 0.05, boundary(45), best_so_far=10_000)
    assert lad.levels == [8, 16, 32, 64]  # 32 passes at 3,200 tok/s: under 64 at most 6,400 < 10,000
    assert lad.stop is not None and lad.stop.startswith("cannot beat the best so far")


def test_an_uncertain_pass_is_measured_again_and_must_pass_twice() -> None:
    outcomes = {
        8: [step(800, 300)],
        16: [step(1600, 990, uncertain=True), step(1500, 1010, uncertain=True)],  # fails the repeat
        12: [step(1200, 700)],
        14: [step(1400, 1200)],
        13: [step(1300, 900)],
    }
    calls: list[float] = []

    def measure(i: int, level: float, n: int) -> Summary:
        calls.append(level)
        return outcomes[int(level)].pop(0)

    cap = CapacitySpec(levels=[8, 16], stop_factor=2.0)
    lad = capacity.run_ladder(cap, None, False, SLO, 0.05, measure)
    assert calls[:3] == [8, 16, 16]  # the uncertain pass at 16, measured again
    b = lad.bracket
    assert b is not None and (b.passing, b.failing) == (13, 14)
    assert lad.levels[lad.scored] == 13  # 16 passed once, failed once: it does not score


def test_an_uncertain_pass_confirmed_scores() -> None:
    outcomes = {8: [step(800, 300)], 16: [step(1600, 990, uncertain=True), step(1590, 995, uncertain=True)]}
    lad = capacity.run_ladder(
        CapacitySpec(levels=[8, 16]),
        None,
        False,
        SLO,
        0.05,
        lambda i, lv, n: outcomes[int(lv)].pop(0),
    )
    assert lad.levels == [8, 16, 16] and lad.levels[lad.scored] == 16 and lad.feasible
    assert lad.bracket is not None and lad.bracket.failing is None and not lad.bracket.within


def test_a_pruned_step_fails_and_stops_the_ladder() -> None:
    def measure(i: int, level: float, n: int) -> Summary:
        if level >= 32:
            return step(100 * level, 400, pruned="ttft_p99 settled over 1000 ms")
        return step(100 * level, 300)

    lad = capacity.run_ladder(CapacitySpec(start=8, max_level=256), None, False, SLO, 0.05, measure)
    assert lad.levels[:3] == [8, 16, 32] and 64 not in lad.levels  # the ladder stopped at the pruned step
    assert lad.bracket is not None and lad.bracket.failing is not None and lad.bracket.failing <= 32


@settings(max_examples=60, deadline=None)
@given(
    cap_level=st.floats(min_value=1.5, max_value=900.0),
    start=st.sampled_from([1.0, 2.0, 4.0]),
    noise=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_noisy_verdicts_still_end_with_a_consistent_bracket(
    cap_level: float, start: float, noise: list[bool]
) -> None:
    """Verdicts that flip near the boundary (within 3 %): the run ends, within the step budget, and the
    bracket's passing level passed every time while its failing level failed at least once."""
    flips = iter(noise)

    def measure(i: int, level: float, n: int) -> Summary:
        ratio = level / cap_level
        if abs(ratio - 1) < 0.03 and next(flips, False):
            ratio = 2 - ratio  # the other side of the boundary
        return step(100 * level, 1000 * ratio, uncertain=abs(ratio - 1) < 0.03)

    cap = CapacitySpec(start=start, factor=2, max_level=1024, stop_factor=1.01)
    lad = capacity.run_ladder(cap, None, False, SLO, 0.05, measure)
    assert len(lad.steps) <= cap.max_steps
    b = lad.bracket
    assert b is not None
    verdicts: dict[float, list[bool]] = {}
    for lv, s in zip(lad.levels, lad.steps, strict=True):
        verdicts.setdefault(lv, []).append(capacity.meets(s, SLO, 0.05))
    if b.passing is not None:
        assert all(verdicts[b.passing])
    if b.failing is not None:
        assert not all(verdicts[b.failing])
        assert b.passing is None or b.passing < b.failing
