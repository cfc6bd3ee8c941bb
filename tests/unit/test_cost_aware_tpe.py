"""The cost-aware TPE of tuner.search.samplers: expected improvement per second of a trial (a compiled key starts
faster), ``rank`` and ``variants`` modes, and that without a cost it is exactly tuner's plain TPE."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.search.restart_cost import RestartCost
from tuner.search.samplers import (
    COST_MODES,
    TrialCost,
    _FixedSpaceTPE,
    log_expected_improvement,
    make_sampler,
    set_trial_cost,
    tpe_sampler,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE: dict[str, BaseDistribution] = {
    "gpu-memory-utilization": FloatDistribution(0.1, 0.9),  # neutral: not part of the key
    "max-num-seqs": CategoricalDistribution([16, 32, 64, 128, 256, 512]),
    "block-size": CategoricalDistribution([16, 32]),
}
CHEAP = {"max-num-seqs": 64, "block-size": 16}


def key(params: Mapping[str, Any]) -> str:
    return f"{params['max-num-seqs']}/{params['block-size']}"


def cost_of(cheap: Mapping[str, Any], *, new_s: float = 200.0, cached_s: float = 20.0) -> RestartCost:
    """A trial whose key is ``cheap``'s costs ``cached_s``, any other ``new_s``."""
    return RestartCost(
        compiled=frozenset({key(cheap)}),
        new_s=new_s,
        cached_s=cached_s,
        key_of=key,
        compiled_params=(dict(cheap),),
    )


def objective(p: Mapping[str, Any]) -> float:
    """Mostly the neutral flag; the key matters a little (the cheap key is not the best one)."""
    return float(p["gpu-memory-utilization"] + 0.1 * math.log2(p["max-num-seqs"]) / 9)


def proposals(
    seed: int, cost: TrialCost | None = None, mode: str | None = None, n: int = 20
) -> list[dict[str, Any]]:
    """The params a seeded study proposes over SPACE (``mode`` None: the cost is never set)."""
    sampler = tpe_sampler(seed=seed, search_space=SPACE)
    if mode is not None:
        assert set_trial_cost(sampler, cost, mode)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask(SPACE)
        study.tell(trial, objective(trial.params))
        out.append(dict(trial.params))
    return out


def repeats(params: list[dict[str, Any]], cheap: Mapping[str, Any] = CHEAP) -> int:
    return sum(key(p) == key(cheap) for p in params)


# ------------------------------------------------------------------------------ log expected improvement


@pytest.mark.parametrize("gamma", [0.05, 0.1, 0.25, 0.5])
def test_log_expected_improvement_is_monotone_and_saturates(gamma: float) -> None:
    acq = np.linspace(-30, 30, 601)
    lei = log_expected_improvement(acq, gamma)
    assert np.all(np.isfinite(lei))
    assert np.all(np.diff(lei) >= 0)
    assert np.all(np.diff(lei[acq < 10]) > 0)  # strictly, where float resolution allows
    assert np.all(lei <= -math.log(gamma) + 1e-12)
    assert lei[-1] == pytest.approx(-math.log(gamma), abs=1e-9)
    assert log_expected_improvement(np.array([0.0]), gamma)[0] == pytest.approx(0.0, abs=1e-12)
    assert lei[0] == pytest.approx(-30 - math.log1p(-gamma), abs=1e-6)  # ~ acq + const far below


def test_log_expected_improvement_keeps_the_order_of_the_acquisition() -> None:
    acq = np.array([0.3, -2.0, 5.0, 1.1])
    assert list(np.argsort(log_expected_improvement(acq, 0.1))) == list(np.argsort(acq))


# ------------------------------------------------------------------------------------------- the search


SEEDS = range(5)


def test_a_cheap_key_is_repeated_more_than_plain_tpe_does() -> None:
    cheap = cost_of(CHEAP)
    plain = [repeats(proposals(s)[3:]) for s in SEEDS]
    ranked = [repeats(proposals(s, cheap, "rank")[3:]) for s in SEEDS]
    variants = [repeats(proposals(s, cheap, "variants")[3:]) for s in SEEDS]
    assert sum(ranked) > 2 * sum(plain) + 5, (plain, ranked)
    assert sum(variants) >= sum(ranked), (ranked, variants)
    # the start-up trials (random draws) are the same whatever the cost
    assert all(proposals(s, cheap, "variants")[:3] == proposals(s)[:3] for s in SEEDS)


def test_a_small_saving_changes_little() -> None:
    # the cost is weighed against the model: a 5 % saving hardly moves the search, a 10x one does
    plain = sum(repeats(proposals(s)[3:]) for s in SEEDS)
    slight = sum(
        repeats(proposals(s, cost_of(CHEAP, new_s=105.0, cached_s=100.0), "rank")[3:]) for s in SEEDS
    )
    strong = sum(repeats(proposals(s, cost_of(CHEAP), "rank")[3:]) for s in SEEDS)
    assert slight <= plain + len(SEEDS) < strong, (plain, slight, strong)


def test_the_same_seed_and_cost_give_the_same_proposals() -> None:
    cheap = cost_of(CHEAP)
    for mode in COST_MODES:
        assert proposals(7, cheap, mode, n=12) == proposals(7, cheap, mode, n=12)
    assert proposals(7, cheap, "rank", n=12) != proposals(8, cheap, "rank", n=12)


@pytest.mark.parametrize("mode", COST_MODES)
def test_no_cost_is_plain_tpe(mode: str) -> None:
    for seed in (0, 1):
        assert proposals(seed, None, mode) == proposals(seed)


def test_a_flat_cost_in_rank_mode_is_plain_tpe() -> None:
    flat = cost_of(CHEAP, new_s=100.0, cached_s=100.0)  # compiling is cheap on this machine
    for seed in (0, 1):
        assert proposals(seed, flat, "rank") == proposals(seed)


def test_a_flat_cost_in_variants_mode_is_plain_tpe() -> None:
    flat = cost_of(CHEAP, new_s=100.0, cached_s=100.0)
    assert proposals(0, flat, "variants", n=15) == proposals(0, n=15)


# --------------------------------------------------------------------------------------------- variants

WIDE: dict[str, BaseDistribution] = {
    "gpu-memory-utilization": FloatDistribution(0.1, 0.9),
    "max-num-batched-tokens": IntDistribution(1000, 100_000),
    "block-size": CategoricalDistribution([16, 32]),
}


def wide_key(params: Mapping[str, Any]) -> str:
    return f"{params['max-num-batched-tokens']}/{params['block-size']}"


def one_proposal(cost: TrialCost | None, mode: str, *, candidates: int = 1, seed: int = 3) -> dict[str, Any]:
    """The first TPE proposal (past the start-up trials) over WIDE after a fixed, flat history."""
    rng = random.Random(1)
    sampler = tpe_sampler(seed=seed, search_space=WIDE, n_ei_candidates=candidates)
    assert set_trial_cost(sampler, cost, mode)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(8):
        p = {
            "gpu-memory-utilization": rng.uniform(0.1, 0.9),
            "max-num-batched-tokens": rng.randint(1000, 100_000),
            "block-size": rng.choice([16, 32]),
        }
        study.add_trial(optuna.trial.create_trial(params=p, distributions=WIDE, value=1.0))
    return dict(study.ask(WIDE).params)


def wide_cost(compiled: Mapping[str, Any]) -> RestartCost:
    return RestartCost(
        compiled=frozenset({wide_key(compiled)}),
        new_s=200.0,
        cached_s=20.0,
        key_of=wide_key,
        compiled_params=(dict(compiled),),
    )


def test_variants_offer_a_compiled_key_no_candidate_had() -> None:
    """With one TPE candidate, ``rank`` can only return it; ``variants`` adds the compiled key's copy of it
    and picks that. Were the samples dict copied by Optuna (not extended in place), this would fail."""
    compiled = {"max-num-batched-tokens": 54_321, "block-size": 32}
    cost = wide_cost(compiled)
    ranked = one_proposal(cost, "rank")
    assert wide_key(ranked) != wide_key(compiled)  # TPE's only candidate has another key
    varied = one_proposal(cost, "variants")
    assert {k: varied[k] for k in compiled} == compiled
    assert varied["gpu-memory-utilization"] == ranked["gpu-memory-utilization"]  # kept from the candidate
    # with Optuna's 8 candidates too (none of which has 54321)
    assert one_proposal(cost, "variants", candidates=8)["max-num-batched-tokens"] == 54_321
    assert one_proposal(cost, "rank", candidates=8)["max-num-batched-tokens"] != 54_321


def test_variants_skip_compiled_values_outside_the_space() -> None:
    # a choice the study file no longer has: no variant, the search is rank mode's
    gone = {"max-num-batched-tokens": 54_321, "block-size": 8}
    cost = wide_cost(gone)
    assert one_proposal(cost, "variants") == one_proposal(cost, "rank")


def test_variants_skip_numbers_outside_a_narrowed_range() -> None:
    gone = {"max-num-batched-tokens": 500, "block-size": 32}  # range is now 1000..100000
    cost = wide_cost(gone)
    for candidates in (1, 4, 8):
        assert one_proposal(cost, "variants", candidates=candidates) == one_proposal(
            cost, "rank", candidates=candidates
        )


# -------------------------------------------------------------------------------------- set_trial_cost


def test_set_trial_cost_only_for_tuners_tpe_over_a_space() -> None:
    cost = cost_of(CHEAP)
    space = dict(SPACE)
    for name in ("random", "gp", "nsga2", "grid"):
        sampler = make_sampler(name, seed=0, n_objectives=1, constraints_func=None, search_space=space)
        assert set_trial_cost(sampler, cost) is False
        assert not hasattr(sampler, "trial_cost")
    plain = make_sampler("tpe", seed=0, n_objectives=1, constraints_func=None)  # no given space
    assert set_trial_cost(plain, cost) is False
    tpe = make_sampler("tpe", seed=0, n_objectives=2, constraints_func=None, search_space=space)
    assert set_trial_cost(tpe, cost, "variants") is True
    assert isinstance(tpe, _FixedSpaceTPE)
    assert tpe.trial_cost is cost and tpe.cost_mode == "variants"
    assert set_trial_cost(tpe, None) is True and tpe.trial_cost is None


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_set_trial_cost_refuses_an_unknown_mode(name: str) -> None:
    sampler = make_sampler(name, seed=0, n_objectives=1, constraints_func=None, search_space=dict(SPACE))
    with pytest.raises(ValueError, match="unknown cost mode 'greedy'"):
        set_trial_cost(sampler, cost_of(CHEAP), "greedy")
    with pytest.raises(ValueError):
        set_trial_cost(sampler, None, "off")  # "off" is the study file's word: the loop never passes it
