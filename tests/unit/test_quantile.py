"""Percentile intervals (order statistics), verdicts and the early-settled rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuner.measure.quantile import (
    CONFIDENCE,
    interval_ranks,
    judge,
    min_samples,
    quantile_of,
    settled_broken,
)


def test_min_samples_for_the_usual_percentiles() -> None:
    assert min_samples(0.99) == 299  # 1 - 0.99**299 >= 0.95
    assert min_samples(0.90) == 29
    assert min_samples(0.50) == 5
    for q in (0.5, 0.9, 0.95, 0.99):
        n = min_samples(q)
        assert interval_ranks(n, q)[1] is not None
        assert interval_ranks(n - 1, q)[1] is None


def test_ranks_bracket_the_quantile_rank() -> None:
    low, high = interval_ranks(1000, 0.9)
    assert low is not None and high is not None
    assert low < 900 < high
    assert high - low < 60


@pytest.mark.parametrize(("q", "n"), [(0.5, 40), (0.9, 200), (0.99, 600)])
def test_interval_covers_the_true_quantile_as_often_as_it_says(q: float, n: int) -> None:
    rng = np.random.default_rng(7)
    true = float(-math.log(1 - q))  # quantile of Exp(1)
    trials = 400
    covered = 0
    for _ in range(trials):
        j = judge(rng.exponential(size=n), q, limit=true)
        covered += j.low <= true <= j.high
    assert covered / trials >= CONFIDENCE - 0.04


def test_verdicts() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(100.0, 5.0, size=2000)
    assert judge(a, 0.9, limit=200.0).verdict == "pass"
    assert judge(a, 0.9, limit=50.0).verdict == "fail"
    j = judge(a, 0.9, limit=float(np.percentile(a, 90)))
    assert j.verdict == "uncertain" and j.low <= j.estimate <= j.high
    few = judge(a[:10], 0.99, limit=1e9)
    assert few.high == math.inf and few.verdict == "uncertain"  # too few samples for a p99 bound
    assert judge([], 0.99, 1.0).verdict == "fail"


@given(
    n=st.integers(min_value=1, max_value=400),
    q=st.sampled_from([0.5, 0.9, 0.95, 0.99]),
    data=st.data(),
)
def test_settled_broken_is_exact_for_numpys_percentile(n: int, q: float, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    limit = 1.0
    if settled_broken(k, n, q):
        # the k known samples are over the limit; the rest as low as can be: the estimate still exceeds it
        worst = np.concatenate([np.full(k, limit + 1e-6), np.zeros(n - k)])
        assert np.percentile(worst, q * 100) > limit
    elif k < n:
        # not settled: the rest at the limit keep the estimate at or under it
        best = np.concatenate([np.full(k, limit + 1.0), np.full(n - k, limit)])
        if k > 0:
            assert np.percentile(best, q * 100) <= limit + 1.0
        lowest = np.concatenate([np.full(k, limit + 1.0), np.zeros(n - k)])
        assert np.percentile(lowest, q * 100) <= limit + 1.0


def test_settled_broken_for_a_p99_step_of_300() -> None:
    assert not settled_broken(3, 300, 0.99)
    assert settled_broken(4, 300, 0.99)


def test_quantile_of_names() -> None:
    assert quantile_of("ttft_p99") == 0.99
    assert quantile_of("itl_p50") == 0.5
    assert quantile_of("output_throughput") is None


@pytest.mark.timeout(120)  # a hang guard: pooled ITL gaps of a real step run to tens of thousands
def test_tens_of_thousands_of_pooled_samples_are_judged() -> None:
    a = np.random.default_rng(3).exponential(scale=10.0, size=60_000)
    j = judge(a, 0.99, limit=60.0)
    assert j.low <= j.estimate <= j.high and j.high - j.low < 2.0 and j.verdict == "pass"
