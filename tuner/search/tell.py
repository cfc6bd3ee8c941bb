"""Finishing a measured trial: store its record (:func:`tuner.search.record.write`), then tell Optuna its
state, objective values and constraints (:func:`tuner.search.objectives.evaluate`).

A measured trial is told COMPLETE with its values. A failed one (oom, crash, startup failure, a pre-launch
rule...) is told PRUNED without values when the study's sampler reads PRUNED trials (TPE: it files the trial
among the infeasible ones by its violated constraints, so it keeps learning the region is bad, while
Optuna's plots, parameter importance and optuna-dashboard, which read COMPLETE trials, see no made-up
values), else COMPLETE with penalty values (GP, NSGA-II): :meth:`tuner.search.objectives.Evaluation.told`.
Never FAIL, never dropped: FAIL is kept for trials that say nothing about their configuration (interrupted,
surplus, duplicates).

With ``prior.predict``, the simulator's prediction of the trial is stored first
(:func:`tuner.search.prior.store_prediction`), and once it is told the simulator's constants are refit to
the study's measured trials (:func:`tuner.search.prior.refit_study`; a failure there is one message).

The reporter hears ``phase("saving")`` once the first attribute is stored (the trial still RUNNING). A trial
another worker took for dead meanwhile (no heartbeat) is already finished in the storage: its result is
kept as a trial of its own (:func:`tuner.search.workers.store_copy`), and the queued copy of its params
finds it and does not run again.
"""

from __future__ import annotations

import optuna
from optuna.exceptions import UpdateFinishedTrialError

from tuner.config.redact import spec_redactor
from tuner.config.spec import StudySpec
from tuner.measure.result import TrialResult
from tuner.progress import FinishedTrial, Reporter
from tuner.search import record, workers
from tuner.search.objectives import evaluate
from tuner.search.prior import refit_study, store_prediction
from tuner.search.record import result_attrs
from tuner.search.samplers import reads_pruned
from tuner.search.study import StudyHandle


def tell(
    handle: StudyHandle, spec: StudySpec, trial: optuna.Trial, result: TrialResult, reporter: Reporter
) -> FinishedTrial:
    """Store ``result`` as ``trial``'s record and tell it (see the module docstring)."""
    ev = evaluate(spec, result)
    state, values = ev.told(prune_failures=reads_pruned(spec.sampler))
    as_list = record.constraints_as_list(handle.study)
    redact = spec_redactor(spec).obj
    store_prediction(trial, spec)
    try:
        record.write(
            trial, result, ev, redact=redact, after_first=lambda: reporter.phase("saving"), as_list=as_list
        )
        handle.study.tell(trial, values, state=state)
    except UpdateFinishedTrialError:
        attrs = redact(result_attrs(result, ev))
        workers.store_copy(handle, trial, state, values, attrs, record.constraint_system_attrs(ev, as_list))
        reporter.message(f"trial {trial.number} had been taken for dead; its result is stored as a new trial")
    note = refit_study(handle.study, spec)
    if note:
        reporter.message(note)
    return FinishedTrial(result.message or "", ev.feasible, ev.values, spec.metric_names, handle.study)
