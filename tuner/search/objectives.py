"""A :class:`~tuner.measure.result.TrialResult` -> what Optuna is told: objective values and constraint values. Pure.

Objectives are the study file's ``objectives`` (metric names of :meth:`tuner.measure.metrics.Summary.metric`), read
from ``result.summary`` — in capacity mode that is the scored step, so the constraints below are the scored
step's too.

Constraints (Optuna's convention: a value <= 0 is satisfied; set with ``Trial.set_constraint`` before
``tell``, so every sampler that supports constraints and ``study.best_trials`` see them). Every trial of a
study gets the same keys:

* one per SLO limit, keyed by the metric (``ttft_p99``): the *relative* violation
  ``observed / limit - 1`` (so 0.25 means 25 % over the limit). Relative, not ``observed - limit`` in ms, so
  that limits of different sizes (a 3000 ms TTFT beside a 200 ms ITL) weigh alike when a sampler sums
  violations (constrained TPE ranks infeasible trials by that sum). Capped at :data:`FAILURE_VIOLATION`.
* ``failed``: 0.0 for a measured trial, 1.0 for a failed one.

A failed trial (``oom``, ``invalid_config``, ``startup_timeout``, ``crashed``, ``load_errors``,
``infeasible`` by a pre-launch rule, or ``ok`` without a usable measurement) is never ``FAIL`` and never
dropped, so the sampler learns that region is infeasible. Its constraints: every SLO key at
:data:`FAILURE_VIOLATION` (as if the latency were 11x its limit: worse than any measured trial, whose
violation is capped there) and ``failed`` = 1.0, so the trial is infeasible whether or not the study has
SLO limits, and ``study.best_trials`` never lists it. How it is told (:meth:`Evaluation.told`):

* **PRUNED, no values** — Optuna's own "this trial has no valid values" — for samplers that read PRUNED
  trials (:func:`tuner.search.samplers.reads_pruned`: TPE, random, grid). TPE puts every trial whose
  constraints are violated among its *infeasible* trials, whatever its state, and those go to the "above"
  (bad) side of its split, ranked by their summed violation: it learns the region as strongly as from a
  penalty value, while plots, parameter importance and the Pareto front (which read COMPLETE trials only)
  no longer see made-up values (0 tok/s, 11x the latency limit) that squash every axis.
* **COMPLETE with penalty values** for GP and NSGA-II, which read COMPLETE trials only (a PRUNED trial
  would be invisible to them): a maximised metric (throughput, goodput) 0.0; a minimised latency
  ``(1 + FAILURE_VIOLATION) x`` its SLO limit when it has one, else the workload's request timeout in ms
  (the longest latency the load generator can observe). Studies stored by tuner before this rule have
  every failed trial in this form; readers tell failures by the stored ``status``, never by the values.

``interrupted`` is not a verdict on the configuration: the study code marks such a trial ``FAIL`` and queues
its params again; :func:`evaluate` refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from optuna.trial import TrialState

from tuner.config.spec import StudySpec
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.measure.watch import settled_metric
from tuner.server.failures import INTERRUPTED

#: the relative SLO violation told for a failed trial, and the cap for a measured one
FAILURE_VIOLATION = 10.0
#: the least violation of a limit a scored step was cut short over (its p_q is over the limit; by how much the
#: cut step cannot say)
SETTLED_VIOLATION = 0.001
#: the constraint key that marks a failed trial
FAILED_KEY = "failed"


@dataclass(frozen=True)
class Evaluation:
    """What to tell Optuna for one trial."""

    values: list[float]  # one per objective, in the study's order
    constraints: dict[str, float]  # SLO keys then ``failed``; <= 0 satisfied
    failure: str | None  # None when measured, else why the penalty was told (a status or "no_measurement")
    #: the SLO metrics observed at the scored step (``{"ttft_p99": 812.0}``); empty for a failed trial
    observed: dict[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    def told(self, prune_failures: bool) -> tuple[TrialState, list[float] | None]:
        """The state and values to tell Optuna: a measured trial COMPLETE with its values; a failed one
        PRUNED without values when ``prune_failures`` (its sampler reads PRUNED trials), else COMPLETE with
        the penalty values (see the module docstring)."""
        if self.failure is not None and prune_failures:
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, list(self.values)


def constraint_keys(spec: StudySpec) -> list[str]:
    """The constraint names every trial of this study carries, in order."""
    return [*spec.slo.limits(), FAILED_KEY]


def evaluate(spec: StudySpec, result: TrialResult) -> Evaluation:
    """Objective and constraint values of a finished trial (see the module docstring)."""
    if result.status == INTERRUPTED:
        raise ValueError("an interrupted trial has no values: queue it again instead")
    if result.status != "ok":
        return penalty(spec, result.status)
    summary = result.summary
    if summary is None:
        return penalty(spec, "no_measurement")
    try:
        values = [summary.metric(name) for name in spec.metric_names]
        observed = {name: summary.metric(name) for name in spec.slo.limits()}
    except KeyError:
        return penalty(spec, "no_measurement")
    if not all(math.isfinite(v) for v in [*values, *observed.values()]):
        return penalty(spec, "no_measurement")
    constraints = {
        name: min(observed[name] / limit - 1.0, FAILURE_VIOLATION)
        for name, limit in spec.slo.limits().items()
    }
    if summary.pruned is not None:
        # scored at a step cut short once it was settled over a limit (no step passed): its figures,
        # from the requests that finished, may look within it; the verdict says it is not
        name = settled_metric(summary.pruned)
        if name in constraints:
            constraints[name] = max(constraints[name], SETTLED_VIOLATION)
    constraints[FAILED_KEY] = 0.0
    return Evaluation(values=values, constraints=constraints, failure=None, observed=observed)


def penalty(spec: StudySpec, failure: str) -> Evaluation:
    """The values told for a failed trial (see the module docstring)."""
    limits = spec.slo.limits()
    values: list[float] = []
    for objective in spec.objectives:
        if objective.direction == "maximize":
            values.append(0.0)
        elif objective.metric in limits:
            values.append((1.0 + FAILURE_VIOLATION) * limits[objective.metric])
        else:
            values.append(spec.workload.request_timeout_s * 1000.0)
    constraints = {name: FAILURE_VIOLATION for name in limits}
    constraints[FAILED_KEY] = 1.0
    return Evaluation(values=values, constraints=constraints, failure=failure)


def metric_or_none(summary: Summary | None, name: str) -> float | None:
    """A metric of a summary, or None when absent or not finite (for reports)."""
    if summary is None:
        return None
    try:
        v = summary.metric(name)
    except KeyError:
        return None
    return v if math.isfinite(v) else None
