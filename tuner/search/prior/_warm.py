"""The warm start: the simulator's best distinct configurations queued at a study's creation.

Contract:

* :func:`simulated_study` — ``n_trials`` trials of tuner's sampler over the search space against any
  prediction function (in memory, nothing stored; one simulation per distinct configuration), and
  :func:`top_distinct`: the best distinct feasible configurations by the study's first objective, never
  one of ``exclude``.
* :func:`warm_start` — with ``prior.sim``, at a study's creation, queue :func:`top_distinct` of
  :func:`simulated_study` after the baseline, each carrying its prediction (``ATTR_PREDICTION``) and rank
  (``ATTR_WARM_START``, read back by :func:`warm_start_rank`); never a configuration already in the study.
  Returns the lines to show: what was queued, or why nothing was (the study then starts the usual way).
* :func:`as_told` — a prediction as a study is told it (objective value and SLO constraints), the rule
  :func:`simulated_study` scores by.

Simulated trials are never told to the real study: only the queued configurations reach it, so TPE learns
from real measurements alone (docs/warmstart.md says why).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from tuner.config.space import distributions, suggest_from
from tuner.config.spec import StudySpec
from tuner.search.prior._target import PriorUnavailable, sim_target
from tuner.search.record import ATTR_PREDICTION, ATTR_WARM_START
from tuner.search.samplers import make_sampler
from tuner.sim.predict import Prediction

Params = dict[str, Any]
#: constraint value of a configuration the simulator says would not start
FAILED_VIOLATION = 10.0
#: predictions within this fraction of each other are a tie for :func:`top_distinct`
TIE = 0.01


def _key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


def as_told(
    p: Prediction, *, metric: str, direction: str, slo: Mapping[str, float]
) -> tuple[float, dict[str, float]]:
    """A prediction as a study would be told it: the objective value (the worst one for a configuration that
    would not start, or without ``metric``) and the constraints (observed / limit - 1 for each SLO metric,
    :data:`FAILED_VIOLATION` when unknown; ``failed``: 1 for a start failure, else 0)."""
    constraints = {}
    for k, limit in slo.items():
        v = p.metrics.get(k)
        constraints[k] = (
            FAILED_VIOLATION if v is None or not math.isfinite(v) else min(v / limit - 1, FAILED_VIOLATION)
        )
    constraints["failed"] = 0.0 if p.failure is None else 1.0
    value = p.metrics.get(metric)
    worst = 0.0 if direction == "maximize" else 1e12
    return (worst if value is None or not math.isfinite(value) or p.failure else value), constraints


def simulated_study(
    space: Mapping[str, BaseDistribution],
    evaluate: Callable[[Params], Prediction],
    *,
    metric: str,
    direction: str,
    slo: Mapping[str, float],
    n_trials: int,
    seed: int | None,
    sampler: str = "tpe",
) -> list[tuple[Params, Prediction]]:
    """``n_trials`` trials of tuner's ``sampler`` over ``space``, scored by ``evaluate``'s ``metric`` with
    the SLO as constraints (as a real study tells them); every trial's params and prediction, in order."""
    cache: dict[tuple[tuple[str, Any], ...], Prediction] = {}
    out: list[tuple[Params, Prediction]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest_from(trial, name, d) for name, d in space.items()}
        key = _key(params)
        if key not in cache:
            cache[key] = evaluate(params)
        p = cache[key]
        out.append((params, p))
        value, constraints = as_told(p, metric=metric, direction=direction, slo=slo)
        for k, c in constraints.items():
            trial.set_constraint(k, c)
        return value

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_sampler(sampler, seed=seed, n_objectives=1, constraints_func=None, search_space=dict(space))
        study = optuna.create_study(direction=optuna.study.StudyDirection[direction.upper()], sampler=s)
        try:
            study.optimize(objective, n_trials=n_trials)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return out


def top_distinct(
    results: Sequence[tuple[Params, Prediction]],
    top: int,
    *,
    metric: str,
    direction: str,
    exclude: Sequence[Mapping[str, Any]] = (),
    tie: float = TIE,
) -> list[tuple[Params, Prediction]]:
    """The ``top`` best feasible configurations of ``results`` by ``metric``, each once, none of ``exclude``.
    Greedy, best first; among those predicted within ``tie`` (relative) of the best left, the one differing
    from the picks so far in the most flags (configurations the simulator cannot tell apart may differ on
    the GPU, so the picks spread over them)."""
    seen = {_key(p) for p in exclude}
    sign = -1.0 if direction == "maximize" else 1.0
    left: dict[tuple[tuple[str, Any], ...], tuple[Params, Prediction]] = {}
    for params, r in sorted(results, key=lambda pr: sign * pr[1].metrics.get(metric, 0.0)):
        key = _key(params)
        if r.feasible and metric in r.metrics and key not in seen and key not in left:
            left[key] = (params, r)
    out: list[tuple[Params, Prediction]] = []
    while left and len(out) < top:
        lead = next(iter(left.values()))[1].metrics[metric]
        near = [k for k, (_, r) in left.items() if abs(r.metrics[metric] - lead) <= tie * abs(lead)]
        key = max(near, key=lambda k: min((_differ(left[k][0], p) for p, _ in out), default=0))
        out.append(left.pop(key))
    return out


def _differ(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b))


def warm_start(study: optuna.Study, spec: StudySpec) -> list[str]:
    """Queue the simulator's best distinct configurations (module docstring); the lines to show."""
    prior = spec.prior
    if prior is None or not prior.sim:
        return []
    try:
        target = sim_target(spec)
    except PriorUnavailable as e:
        return [f"warm start skipped: {e}; the study starts the usual way"]
    if not spec.search:
        return []
    t0 = time.monotonic()
    metric, direction = spec.metric_names[0], spec.direction_names[0]
    results = simulated_study(
        distributions(spec),
        target.predict,
        metric=metric,
        direction=direction,
        slo=spec.slo.limits(),
        n_trials=prior.trials,
        seed=spec.seed,
        sampler=spec.sampler,
    )
    taken = [_params_of(t) for t in study.get_trials(deepcopy=False)]
    best = top_distinct(results, prior.top, metric=metric, direction=direction, exclude=taken)
    for rank, (params, p) in enumerate(best, start=1):
        attrs = {ATTR_PREDICTION: p.to_dict(), ATTR_WARM_START: rank}
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    took = time.monotonic() - t0
    where = f"{target.hardware.name} profile, {prior.trials} simulated trials, {took:.0f} s"
    if not best:
        return [f"warm start: the simulator ({where}) found no configuration meeting the SLO; none queued"]
    lead = best[0][1].metrics[metric]
    return [
        f"warm start: the simulator ({where}) queued {len(best)} configuration(s) after the baseline; "
        f"predicted best {metric} {lead:,.4g}"
    ]


def _params_of(t: FrozenTrial) -> dict[str, Any]:
    """A trial's params, a queued one's included (Optuna keeps those as its ``fixed_params``)."""
    fixed = t.system_attrs.get("fixed_params")
    return {**(fixed if isinstance(fixed, dict) else {}), **t.params}


def warm_start_rank(t: FrozenTrial) -> int | None:
    """1 for the simulator's best configuration queued by the warm start, 2 for the next...; None otherwise."""
    r = t.user_attrs.get(ATTR_WARM_START)
    return r if isinstance(r, int) and not isinstance(r, bool) else None
