"""Finishing a measured trial: store its record (:func:`tuner.search.record.write`), then tell Optuna its
objective values and constraints (:func:`tuner.search.objectives.evaluate`).

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
from tuner.search.record import result_attrs
from tuner.search.study import StudyHandle


def tell(
    handle: StudyHandle, spec: StudySpec, trial: optuna.Trial, result: TrialResult, reporter: Reporter
) -> FinishedTrial:
    """Store ``result`` as ``trial``'s record and tell it COMPLETE (see the module docstring)."""
    ev = evaluate(spec, result)
    redact = spec_redactor(spec).obj
    try:
        record.write(trial, result, ev, redact=redact, after_first=lambda: reporter.phase("saving"))
        handle.study.tell(trial, ev.values)
    except UpdateFinishedTrialError:
        workers.store_copy(handle, trial, ev, redact(result_attrs(result, ev)))
        reporter.message(f"trial {trial.number} had been taken for dead; its result is stored as a new trial")
    return FinishedTrial(result.message or "", ev.feasible, ev.values, spec.metric_names, handle.study)
