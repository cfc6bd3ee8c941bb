"""Optuna samplers by name, with the defaults the search-efficiency benchmark chose.

:func:`make_sampler` ``(name, *, seed, n_objectives, constraints_func, search_space=None)`` for ``tpe``,
``gp``, ``nsga2``, ``random`` and ``grid``. Contracts:

* the same ``(name, seed, search_space)`` gives a sampler that proposes the same sequence;
* when ``search_space`` is given, model-based samplers (TPE, GP) model *that* space from the first trial on.
  Optuna otherwise infers the space as the intersection of finished trials' params, which a baseline trial
  without params (vLLM's defaults) would make empty, silently degrading the search to random;
* constraints: pass ``constraints_func`` (values <= 0 mean feasible), or ``None`` when the objective calls
  ``trial.set_constraint`` (Optuna >= 5; what tuner's study loop does) — every sampler here reads those.
  ``constraints_func`` is deprecated in Optuna 5 for TPE/GP; the FutureWarning is silenced here;
* ``grid`` needs ``search_space``: categorical choices are taken whole; a numeric range becomes
  :data:`GRID_POINTS` points (geometric for log ranges, respecting ``step``, deduplicated), so a grid over
  a few flags stays small. Raises ``ValueError`` for an unknown name or a grid without a space.

Defaults (evidence in ``docs/simulator.md``, ``bench/search_efficiency.py``): TPE, multivariate (joint
Parzen estimators: the flags interact — max-num-seqs vs max-num-batched-tokens vs the KV cache), 3 random
start-up trials (tuner's study adds vLLM's defaults as a baseline trial before them; Optuna's 10 spend a
quarter of a 40-trial budget on random draws), 8 EI candidates (less greedy than Optuna's 24 on the
plateaus capacity-mode objectives have), ``constant_liar`` for parallel workers. Chosen on seeds the
benchmark does not report: within 15 trials 87-88% of searches reached 95% of the optimum with these
settings, 79% with Optuna's TPE defaults, 81% with GP (6 seeds), ~80% with random search. For
multi-objective studies the same TPE is used (MOTPE). GP: 5 start-up trials; NSGA-II: population 8.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

SAMPLER_NAMES = ("tpe", "gp", "nsga2", "random", "grid")

#: TPE settings chosen by the benchmark (see the module docstring)
TPE_STARTUP_TRIALS = 3
TPE_EI_CANDIDATES = 8
#: GP start-up trials (Optuna's default is 10)
GP_STARTUP_TRIALS = 5
#: NSGA-II population for budgets of tens of trials (Optuna's default, 50, exceeds most budgets)
NSGA2_POPULATION = 8
#: points per numeric range on a grid
GRID_POINTS = 5

ConstraintsFunc = Callable[[FrozenTrial], Sequence[float]]


class _FixedSpaceTPE(optuna.samplers.TPESampler):
    """Multivariate TPE over a given search space (not the intersection of finished trials)."""

    def __init__(self, space: dict[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space = dict(space)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)


class _FixedSpaceGP(optuna.samplers.GPSampler):
    """Optuna's GP sampler over a given search space."""

    def __init__(self, space: dict[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space = dict(space)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)


def make_sampler(
    name: str,
    *,
    seed: int | None,
    n_objectives: int,
    constraints_func: ConstraintsFunc | None,
    search_space: dict[str, BaseDistribution] | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` with tuner's defaults (see the module docstring)."""
    if n_objectives < 1:
        raise ValueError("n_objectives must be at least 1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return tpe_sampler(seed=seed, constraints_func=constraints_func, search_space=search_space)
        if name == "gp":
            kw: dict[str, Any] = {
                "seed": seed,
                "n_startup_trials": GP_STARTUP_TRIALS,
                "constraints_func": constraints_func,
                "deterministic_objective": False,
            }
            if search_space:
                return _FixedSpaceGP(search_space, **kw)
            return optuna.samplers.GPSampler(**kw)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(
                seed=seed, population_size=NSGA2_POPULATION, constraints_func=constraints_func
            )
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            if not search_space:
                raise ValueError("the grid sampler needs the search space")
            return optuna.samplers.GridSampler(grid_values(search_space), seed=seed)
    raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLER_NAMES)}")


def tpe_sampler(
    *,
    seed: int | None,
    constraints_func: ConstraintsFunc | None = None,
    search_space: dict[str, BaseDistribution] | None = None,
    n_startup_trials: int = TPE_STARTUP_TRIALS,
    n_ei_candidates: int = TPE_EI_CANDIDATES,
    multivariate: bool = True,
) -> optuna.samplers.TPESampler:
    """TPE with tuner's defaults; the keyword arguments exist for the benchmark's comparisons."""
    kw: dict[str, Any] = {
        "seed": seed,
        "n_startup_trials": n_startup_trials,
        "n_ei_candidates": n_ei_candidates,
        "multivariate": multivariate,
        "constant_liar": True,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if constraints_func is not None:
            kw["constraints_func"] = constraints_func
        if search_space and multivariate:
            return _FixedSpaceTPE(search_space, **kw)
        return optuna.samplers.TPESampler(**kw)


def grid_values(space: dict[str, BaseDistribution], points: int = GRID_POINTS) -> dict[str, list[Any]]:
    """A small grid over ``space``: every choice of a categorical; ``points`` values of a numeric range
    (endpoints included; geometric when ``log``; on the ``step`` lattice when there is one)."""
    out: dict[str, list[Any]] = {}
    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[name] = list(d.choices)
        elif isinstance(d, IntDistribution):
            out[name] = _int_points(d, points)
        elif isinstance(d, FloatDistribution):
            out[name] = _float_points(d, points)
        else:
            raise ValueError(f"{name}: unsupported distribution {type(d).__name__}")
    return out


def _spread(low: float, high: float, log: bool, points: int) -> list[float]:
    if points <= 1 or low == high:
        return [low]
    if log:
        a, b = math.log(low), math.log(high)
        return [math.exp(a + (b - a) * i / (points - 1)) for i in range(points)]
    return [low + (high - low) * i / (points - 1) for i in range(points)]


def _int_points(d: IntDistribution, points: int) -> list[int]:
    step = d.step or 1
    vals = []
    for v in _spread(float(d.low), float(d.high), d.log, points):
        k = round((v - d.low) / step)
        vals.append(min(d.low + k * step, d.high))
    return sorted(set(vals))


def _float_points(d: FloatDistribution, points: int) -> list[float]:
    vals = _spread(d.low, d.high, d.log, points)
    if d.step is not None:
        n = math.floor((d.high - d.low) / d.step + 1e-9)
        vals = [d.low + min(round((v - d.low) / d.step), n) * d.step for v in vals]
    return sorted({round(v, 10) for v in vals})
