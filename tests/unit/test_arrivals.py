"""Arrival processes: Poisson, constant, gamma (burstiness) and trace replay; shape, statistics (seeded)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tuner.load.arrivals import (
    Arrivals,
    poisson_offsets,
    poisson_send_times,
    poisson_send_times_until,
    trace_offsets,
)


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


def take(a: Arrivals, n: int, seed: int = 0, at: list[float] | None = None) -> np.ndarray:
    return np.fromiter(itertools.islice(a.offsets(np.random.default_rng(seed), at or []), n), dtype=float)


def test_constant_rate_is_a_metronome() -> None:
    t = take(Arrivals("constant", rate=4.0), 1001)
    assert t[0] == 0.0 and t[-1] == pytest.approx(250.0) and np.diff(t) == pytest.approx(np.full(1000, 0.25))


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 2.0, 4.0])
def test_gamma_keeps_the_rate_and_has_cv_one_over_sqrt_burstiness(burstiness: float) -> None:
    rate = 5.0
    gaps = np.diff(take(Arrivals("gamma", rate=rate, burstiness=burstiness), 40_001, seed=11))
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)


def test_gamma_with_burstiness_one_is_poisson() -> None:
    gamma = take(Arrivals("gamma", rate=3.0, burstiness=1.0), 500, seed=2)
    poisson = take(Arrivals("poisson", rate=3.0), 500, seed=2)
    assert np.array_equal(gamma, poisson)  # the same law: the same draws
    assert np.array_equal(poisson, poisson_send_times(3.0, 500, np.random.default_rng(2)))


def test_seeded_draws_repeat() -> None:
    a = Arrivals("gamma", rate=2.0, burstiness=0.5)
    assert np.array_equal(take(a, 100, seed=4), take(a, 100, seed=4))
    assert not np.array_equal(take(a, 100, seed=4), take(a, 100, seed=5))


def test_trace_is_divided_by_its_scale_and_starts_at_zero() -> None:
    at = [10.0, 10.5, 10.5, 12.0]
    assert take(Arrivals("trace", scale=2.0), 4, at=at).tolist() == [0.0, 0.25, 0.25, 1.0]
    assert list(trace_offsets([0.0, 1.0, 0.0, 0.5], 1.0)) == [0.0, 1.0, 1.0, 1.5]  # wrapped: no gap back
    with pytest.raises(ValueError, match="at_s"):
        list(trace_offsets([0.0, None], 1.0))


def test_arrivals_validation_and_description() -> None:
    for bad in (
        dict(kind="poisson"),
        dict(kind="constant", rate=0.0),
        dict(kind="gamma", rate=1.0, burstiness=0.0),
        dict(kind="trace", scale=0.0),
    ):
        with pytest.raises(ValueError):
            Arrivals(**bad)  # type: ignore[arg-type]
    assert Arrivals("gamma", rate=2.5, burstiness=0.5).describe() == "2.5 req/s (gamma, burstiness 0.5)"
    assert Arrivals(rate=2.0).describe() == "2 req/s"
    assert Arrivals("trace", scale=4).describe() == "trace x4"
