"""Spreads of a trial and its repeats, the within-noise rule, and which configurations ``confirm`` picks."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from tuner.report.noise import Spread, failed_score, noise_note, runner_up, spreads, within_noise
from tuner.report.status import confirmed, describe_confirmed
from tuner.search.confirm import front_of_originals, leaders, plan
from tuner.search.record import (
    ATTR_BASELINE,
    ATTR_FEASIBLE,
    ATTR_REPEAT_OF,
    ATTR_RUN_PARAMS,
    ATTR_STATUS,
    TrialRecord,
    read,
)


def rec(
    number: int,
    score: float,
    *,
    repeat_of: int | None = None,
    status: str = "ok",
    feasible: bool = True,
    params: dict[str, Any] | None = None,
    baseline: bool = False,
    state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE,
) -> TrialRecord:
    attrs: dict[str, Any] = {
        ATTR_STATUS: status,
        ATTR_FEASIBLE: feasible,
        ATTR_BASELINE: baseline,
        ATTR_RUN_PARAMS: params if params is not None else {"max-num-seqs": number},
    }
    if repeat_of is not None:
        attrs[ATTR_REPEAT_OF] = repeat_of
    done = state == optuna.trial.TrialState.COMPLETE
    t = optuna.trial.create_trial(
        state=state, values=[score] if done else None, user_attrs=attrs, params={}, distributions={}
    )
    t.number = number
    return read(t)


def test_spread_is_mean_and_range_over_the_original_and_its_repeats() -> None:
    found = spreads([rec(3, 100.0), rec(5, 90.0), rec(7, 110.0, repeat_of=3), rec(8, 96.0, repeat_of=3)])
    assert found[3] == Spread(3, 3, pytest.approx(102.0), 96.0, 110.0)  # type: ignore[arg-type]
    assert found[5] == Spread(5, 1, 90.0, 90.0, 90.0)
    assert 7 not in found and 8 not in found  # keyed by the original only
    assert found[3].half_range == 7.0 and found[3].confirmed and not found[5].confirmed


def test_a_failed_repeat_counts_with_its_told_score_and_failed_originals_have_none() -> None:
    found = spreads(
        [
            rec(1, 100.0),
            rec(2, 0.0, repeat_of=1, status="crashed", feasible=False),
            rec(3, 0.0, status="oom", feasible=False),
            rec(4, 50.0, feasible=False),  # measured, SLO broken: not scored
            rec(5, 40.0, repeat_of=3),  # a repeat of something unscored
        ]
    )
    assert set(found) == {1}
    assert (found[1].n, found[1].low, found[1].mean) == (2, 0.0, 50.0)


def test_a_failed_repeat_told_pruned_counts_as_the_worst_score() -> None:
    pruned = optuna.trial.TrialState.PRUNED
    records = [
        rec(1, 100.0),
        rec(2, 0.0, repeat_of=1, status="crashed", feasible=False, state=pruned),  # no values
        rec(3, 90.0, repeat_of=1),
        rec(4, 0.0, status="oom", feasible=False, state=pruned),
        rec(5, 40.0, repeat_of=4),  # a repeat of a failed original
    ]
    assert [r.values for r in records if r.state == pruned] == [None, None]
    found = spreads(records)
    assert set(found) == {1} and (found[1].n, found[1].low, found[1].high) == (3, 0.0, 100.0)
    slow = spreads(records, maximize=False)[1]  # a latency: a failure is worse than any figure
    assert (slow.n, slow.low, slow.high) == (3, 90.0, math.inf)
    assert failed_score(True) == 0.0 and failed_score(False) == math.inf


def test_repeats_still_running_are_not_scores() -> None:
    running = rec(2, 0.0, repeat_of=1, state=optuna.trial.TrialState.RUNNING)
    assert spreads([rec(1, 10.0), running])[1].n == 1


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((100, 110), (105, 120), True),  # overlap
        ((100, 110), (110, 120), True),  # touching ends: one run of each scored the same
        ((100, 110), (111, 120), False),  # every run of b beat every run of a
        ((100, 100), (90, 105), True),  # a single score inside a range
        ((100, 100), (101, 101), False),
    ],
)
def test_within_noise_is_overlapping_ranges(
    a: tuple[float, float], b: tuple[float, float], expected: bool
) -> None:
    sa = Spread(1, 2, sum(a) / 2, *a)
    sb = Spread(2, 2, sum(b) / 2, *b)
    assert within_noise(sa, sb) is expected and within_noise(sb, sa) is expected


def test_runner_up_is_the_best_other_confirmed_mean() -> None:
    found = {
        1: Spread(1, 3, 100.0, 95.0, 104.0),
        2: Spread(2, 3, 98.0, 96.0, 99.0),
        3: Spread(3, 3, 99.0, 90.0, 101.0),
        4: Spread(4, 1, 120.0, 120.0, 120.0),  # one run: not confirmed
    }
    assert runner_up(1, found, maximize=True) == found[3]
    assert runner_up(1, found, maximize=False) == found[2]
    assert runner_up(4, {4: found[4]}, maximize=True) is None


def test_the_note_names_both_trials_with_mean_and_spread() -> None:
    a = Spread(7, 3, 4504.0, 4464.0, 4544.0)
    b = Spread(12, 3, 4470.0, 4415.0, 4525.0)
    assert noise_note(a, b, "tok/s") == "trials 7 and 12 are within noise: 4,504 ± 40 vs 4,470 ± 55 tok/s"


def test_status_rows_sort_by_mean_and_name_the_neighbours_in_noise() -> None:
    records = [rec(1, 100.0), rec(2, 99.0), rec(3, 50.0), rec(4, 101.0, repeat_of=1)]
    records += [rec(5, 98.0, repeat_of=2), rec(6, 52.0, repeat_of=3)]
    rows = confirmed(records, maximize=True)
    assert [r["trial"] for r in rows] == [1, 2, 3]
    assert rows[0]["within_noise_of"] == [] and rows[2]["within_noise_of"] == []
    rows = confirmed([*records, rec(9, 98.5, repeat_of=1)], maximize=True)
    assert rows[0]["within_noise_of"] == [2] and rows[1]["within_noise_of"] == [1]
    assert describe_confirmed(rows[0], "tok/s") == "#1 99.8 ± 1.25 tok/s over 3 runs (within noise of #2)"


def test_leaders_are_the_best_distinct_feasible_originals_and_the_baseline() -> None:
    records = [
        rec(0, 40.0, baseline=True, params={}),
        rec(1, 90.0),
        rec(2, 95.0, params={"max-num-seqs": 1}),  # the same configuration as trial 1, better scored
        rec(3, 99.0, feasible=False),
        rec(4, 0.0, status="oom", feasible=False),
        rec(5, 80.0),
        rec(6, 70.0),
        rec(7, 120.0, repeat_of=5),  # a repeat is never a leader
    ]
    assert [r.number for r in leaders(records, maximize=True, top=2)] == [2, 5, 0]
    assert [r.number for r in leaders(records, maximize=True, top=9)] == [2, 5, 6, 0]
    assert [r.number for r in leaders(records, maximize=False, top=1)] == [0]


def test_plan_counts_repeats_done_running_and_queued_but_not_interrupted_ones() -> None:
    waiting, running, fail = (
        optuna.trial.TrialState.WAITING,
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.FAIL,
    )
    records = [rec(0, 40.0, baseline=True, params={}), rec(1, 90.0), rec(2, 80.0)]
    assert plan(records, True, top=1, repeats=2) == {1: 2, 0: 2}
    records += [
        rec(3, 91.0, repeat_of=1),
        rec(4, 0.0, repeat_of=1, state=running),
        rec(5, 0.0, repeat_of=0, state=waiting),
        rec(6, 0.0, repeat_of=0, state=fail),  # interrupted: queued again by the repair, not counted
    ]
    assert plan(records, True, top=1, repeats=2) == {1: 0, 0: 1}
    assert plan(records, True, top=2, repeats=1) == {1: 0, 2: 1, 0: 0}


def test_the_front_leaves_repeats_out_and_keeps_their_originals() -> None:
    study = optuna.create_study(directions=["maximize"])
    for score, attrs in ((10.0, {}), (12.0, {}), (13.0, {ATTR_REPEAT_OF: 1})):
        study.add_trial(optuna.trial.create_trial(values=[score], user_attrs=attrs))
    assert [t.number for t in study.best_trials] == [2]
    assert [t.number for t in front_of_originals(study)] == [1]
