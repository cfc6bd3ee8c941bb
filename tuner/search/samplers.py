"""Optuna samplers by name, with the defaults the search-efficiency benchmark chose.

:func:`make_sampler` ``(name, *, seed, n_objectives, constraints_func, search_space=None)`` for each name of
:data:`SAMPLER_NAMES` (the one list of sampler names). Contracts:

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

Defaults: TPE, multivariate (joint Parzen estimators: the flags interact — max-num-seqs vs
max-num-batched-tokens vs the KV cache), :data:`TPE_STARTUP_TRIALS` random start-up trials (tuner's study
adds vLLM's defaults as a baseline trial before them), :data:`TPE_EI_CANDIDATES` EI candidates (less greedy
than Optuna's on the plateaus capacity-mode objectives have), ``constant_liar`` for parallel workers; for
multi-objective studies the same TPE (MOTPE). GP: :data:`GP_STARTUP_TRIALS` start-up trials; NSGA-II:
population :data:`NSGA2_POPULATION`. The evidence for these choices, with its figures and limits, is in
``docs/simulator.md`` ("Search efficiency"; ``bench/search_efficiency.py``).

Cost-aware TPE (:func:`set_trial_cost`): the study loop gives tuner's TPE the expected cost of a trial
(:class:`tuner.search.restart_cost.RestartCost`: a server start with a compile key vLLM has cached is shorter
on a GPU), and TPE then ranks its candidates by expected improvement per second. Its proposals stay draws
from TPE's own model; only the choice among them changes, and only where candidates can share a compile
key (flags searched as choice lists: on ranges no candidate repeats a compiled value, and ``rank`` is plain
TPE). Off by default; the evidence is in ``docs/restart_cost.md`` (``bench/restart_cost.py``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

SAMPLER_NAMES = ("tpe", "gp", "nsga2", "random", "grid")

__all__ = [
    "COST_MODES",
    "SAMPLER_NAMES",
    "TrialCost",
    "grid_values",
    "log_expected_improvement",
    "make_sampler",
    "reads_pruned",
    "set_trial_cost",
    "tpe_sampler",
]

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


class TrialCost(Protocol):
    """What a trial of given params is expected to cost (:class:`tuner.search.restart_cost.RestartCost`)."""

    #: param values (a subset of the searched params) that make a trial cheap, for ``variants`` mode
    @property
    def compiled_params(self) -> Sequence[Mapping[str, Any]]: ...

    def log_cost(self, params: Mapping[str, Any]) -> float: ...


#: how the cost-aware TPE uses a :class:`TrialCost`: ``rank`` its own candidates by expected improvement
#: per second; ``variants``: also rank, beside each candidate, its copies with a compiled key's values
COST_MODES = ("rank", "variants")


class _FixedSpaceTPE(optuna.samplers.TPESampler):
    """Multivariate TPE over a given search space (not the intersection of finished trials), optionally
    cost-aware.

    With :attr:`trial_cost` set, TPE's candidates (drawn from the good-trials density, as always) are ranked
    by expected improvement *per second* instead of expected improvement: TPE's acquisition
    ``a = log l(x) - log g(x)`` is turned into ``log EI(x) = -log(gamma + (1 - gamma) exp(-a))`` (Bergstra et
    al. 2011, eq. 4, up to a constant) and ``log cost(x)`` is subtracted. A candidate whose server starts from
    vLLM's compile cache wins over an equally promising new compile key, but not over a clearly better one.
    In ``variants`` mode each candidate is also offered with the compile-key values of every compiled key
    (its other params kept), rated by the same model.
    """

    def __init__(self, space: dict[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space = dict(space)
        self.trial_cost: TrialCost | None = None
        self.cost_mode = "rank"
        self._n_finished = 0

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def _sample(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        self._n_finished = len(study._get_trials(deepcopy=False, states=finished, use_cache=False))
        return super()._sample(study, trial, search_space)

    def _compute_acquisition_func(
        self, samples: dict[str, np.ndarray], mpe_below: Any, mpe_above: Any
    ) -> Any:
        cost = self.trial_cost
        if cost is None or not set(self._space) <= set(samples):
            return super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        offered = self._variants(samples, cost) if self.cost_mode == "variants" else samples
        log_costs = self._log_costs(offered, cost)
        if log_costs.size == 0 or not np.all(np.isfinite(log_costs)) or np.ptp(log_costs) == 0.0:
            return super()._compute_acquisition_func(samples, mpe_below, mpe_above)  # costs say nothing
        # variants extend the candidates in place: Optuna's TPE picks from this same dict
        # (tests/unit/test_cost_aware_tpe.py checks it, so an Optuna that copies it fails a test, not a study)
        samples.update(offered)
        acq = np.asarray(super()._compute_acquisition_func(samples, mpe_below, mpe_above), dtype=float)
        return log_expected_improvement(acq, self._gamma_share()) - log_costs

    def _log_costs(self, samples: dict[str, np.ndarray], cost: TrialCost) -> np.ndarray:
        names = list(self._space)
        n = next(iter(samples.values())).size if samples else 0
        return np.array(
            [
                cost.log_cost({k: self._space[k].to_external_repr(samples[k][i]) for k in names})
                for i in range(n)
            ],
            dtype=float,
        )

    def _variants(self, samples: dict[str, np.ndarray], cost: TrialCost) -> dict[str, np.ndarray]:
        """The candidates, then each candidate with each compiled key's values (internal representation)."""
        fixed: list[dict[str, float]] = []
        for values in cost.compiled_params:
            try:
                one = {k: self._space[k].to_internal_repr(v) for k, v in values.items() if k in self._space}
            except (ValueError, TypeError):
                continue  # a choice no longer in the search space (the study file changed)
            if one and all(self._space[k]._contains(v) for k, v in one.items()):
                fixed.append(one)  # (a number outside a narrowed range, or off its step, is left out)
        if not fixed:
            return samples
        n = next(iter(samples.values())).size
        out = {}
        for name, column in samples.items():
            extra = [f.get(name, column[i]) for f in fixed for i in range(n)]
            out[name] = np.concatenate([column, np.asarray(extra, dtype=column.dtype)])
        return out

    def _gamma_share(self) -> float:
        n = self._n_finished
        gamma_fn = self._gamma
        if n <= 0 or gamma_fn is None:
            return 0.25
        return min(max(gamma_fn(n) / n, 1e-3), 1.0 - 1e-3)


def log_expected_improvement(acq: np.ndarray, gamma: float) -> np.ndarray:
    """TPE's ``log l(x) - log g(x)`` as log expected improvement, up to a constant:
    ``-log(gamma + (1 - gamma) * exp(-acq))``. Monotone in ``acq``; saturates at ``-log gamma``."""
    return -np.logaddexp(math.log(gamma), math.log1p(-gamma) - np.asarray(acq, dtype=float))


class _FixedSpaceGP(optuna.samplers.GPSampler):
    """Optuna's GP sampler over a given search space."""

    def __init__(self, space: dict[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space = dict(space)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)


#: samplers that read PRUNED trials (TPE: with their constraints, as infeasible; random and grid read nothing);
#: GP and NSGA-II model COMPLETE trials only (Optuna 5)
_READS_PRUNED = frozenset({"tpe", "random", "grid"})


def reads_pruned(name: str) -> bool:
    """Does the sampler ``name`` learn from a PRUNED trial (so a failed trial may be told PRUNED, without
    values: :meth:`tuner.search.objectives.Evaluation.told`)?"""
    return name in _READS_PRUNED


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


def set_trial_cost(sampler: optuna.samplers.BaseSampler, cost: TrialCost | None, mode: str = "rank") -> bool:
    """Make ``sampler`` rank its candidates by expected improvement per second of ``cost`` (None: plain
    expected improvement), in one of :data:`COST_MODES`. Returns False, changing nothing, for a sampler that
    cannot (all but tuner's TPE over a given space)."""
    if mode not in COST_MODES:
        raise ValueError(f"unknown cost mode {mode!r}; known: {', '.join(COST_MODES)}")
    if not isinstance(sampler, _FixedSpaceTPE):
        return False
    sampler.trial_cost = cost
    sampler.cost_mode = mode
    return True


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
