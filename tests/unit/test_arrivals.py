"""Poisson send schedules: shape, statistics (seeded), edge cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tuner.load.arrivals import poisson_offsets, poisson_send_times, poisson_send_times_until


def test_shape_and_order() -> None:
    t = poisson_send_times(10.0, 500, np.random.default_rng(0))
    assert len(t) == 500
    assert t[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(t))


@pytest.mark.parametrize("rate", [0.5, 4.0, 100.0])
def test_mean_gap_and_dispersion(rate: float) -> None:
    gaps = np.diff(poisson_send_times(rate, 20_001, np.random.default_rng(7)))
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() == pytest.approx(1 / rate, rel=0.05)  # exponential: std == mean


def test_counts_per_window_are_poisson() -> None:
    rate, horizon = 50.0, 400.0
    t = np.asarray(poisson_send_times_until(rate, horizon, np.random.default_rng(3)))
    counts = np.histogram(t, bins=int(horizon), range=(0, horizon))[0]  # 1 s windows
    assert counts.mean() == pytest.approx(rate, rel=0.03)
    assert counts.var() == pytest.approx(rate, rel=0.2)  # Poisson: variance == mean


def test_seeded() -> None:
    a = poisson_send_times(3.0, 50, np.random.default_rng(1))
    b = poisson_send_times(3.0, 50, np.random.default_rng(1))
    c = poisson_send_times(3.0, 50, np.random.default_rng(2))
    assert a == b and a != c


def test_until_stops_before_duration() -> None:
    t = poisson_send_times_until(20.0, 5.0, np.random.default_rng(0))
    assert t[0] == 0.0 and t[-1] < 5.0
    assert 60 < len(t) < 140


def test_offsets_stream_matches_law() -> None:
    first = list(itertools.islice(poisson_offsets(8.0, np.random.default_rng(5)), 5000))
    assert first[0] == 0.0
    assert np.diff(first).mean() == pytest.approx(1 / 8, rel=0.05)


def test_infinite_rate_sends_at_once() -> None:
    assert poisson_send_times(math.inf, 3, np.random.default_rng(0)) == [0.0, 0.0, 0.0]
    assert list(itertools.islice(poisson_offsets(math.inf, np.random.default_rng(0)), 3)) == [0.0] * 3
    with pytest.raises(ValueError):
        poisson_send_times_until(math.inf, 1.0, np.random.default_rng(0))


def test_empty_and_invalid() -> None:
    rng = np.random.default_rng(0)
    assert poisson_send_times(1.0, 0, rng) == []
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError):
            poisson_send_times(bad, 3, rng)
    with pytest.raises(ValueError):
        poisson_send_times(1.0, -1, rng)
