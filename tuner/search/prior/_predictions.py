"""The simulator's prediction stored beside every trial, and its error against the measurement.

Contract: :func:`store_prediction` / :func:`stored_prediction` write and read a trial's prediction
(``ATTR_PREDICTION``); with a stored refit (:func:`tuner.search.prior.stored_refit`), the prediction is made
with the refit constants and records how many trials the refit had seen (:data:`REFIT_N`, read back by
:func:`prediction_refit_n`; 0: the profile's own constants). :func:`trial_errors`: predicted vs measured of
one finished trial; :func:`error_summary`: over a study's trials, in words.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial

from tuner.config.spec import StudySpec
from tuner.search.prior._measured import measured_metrics, prediction_errors
from tuner.search.prior._refit import stored_refit
from tuner.search.prior._target import sim_target
from tuner.search.record import ATTR_PREDICTION, ATTR_RUN_PARAMS, FINISHED_STATES, read
from tuner.sim.predict import Prediction

#: key in a stored prediction: how many trials the refit it was made with had seen (0: none)
REFIT_N = "refit_n"


def store_prediction(trial: optuna.Trial, spec: StudySpec) -> None:
    """Store the simulator's prediction for what ``trial`` ran (its run params, else its params) when the
    study asks for predictions (``prior.predict``), the simulator can model it, and the trial carries none
    yet (a warm-start one does); made with the study's stored refit when ``prior.refit`` (module docstring)."""
    if spec.prior is None or not spec.prior.predict or trial.user_attrs.get(ATTR_PREDICTION):
        return
    run = trial.user_attrs.get(ATTR_RUN_PARAMS)
    try:
        target = sim_target(spec)
        fitted = stored_refit(trial.study, target.hardware) if spec.prior.refit else None
        if fitted is not None:
            target = dataclasses.replace(target, hardware=fitted.hardware)
        pred = target.predict(run if isinstance(run, Mapping) else trial.params).to_dict()
    except Exception:  # a prediction is an extra (PriorUnavailable included): never the trial's cost
        return
    if spec.prior.refit:
        pred[REFIT_N] = fitted.n if fitted is not None else 0
    trial.set_user_attr(ATTR_PREDICTION, pred)


def stored_prediction(t: FrozenTrial) -> Prediction | None:
    """The prediction stored with ``t``, or None."""
    d = t.user_attrs.get(ATTR_PREDICTION)
    return Prediction.from_dict(d) if isinstance(d, Mapping) and d else None


def trial_errors(t: FrozenTrial) -> dict[str, float]:
    """Predicted vs measured for one finished trial (:func:`prediction_errors`); ``{}`` without a prediction
    or a measurement."""
    pred = stored_prediction(t)
    rec = read(t)
    if pred is None or rec.failed or rec.result is None:
        return {}
    return prediction_errors(pred, measured_metrics(rec.result.metrics))


def prediction_refit_n(t: FrozenTrial) -> int | None:
    """How many trials the refit behind ``t``'s stored prediction had seen (0: the profile's own constants);
    None for a prediction stored without the mark."""
    d = t.user_attrs.get(ATTR_PREDICTION)
    n = d.get(REFIT_N) if isinstance(d, Mapping) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def error_summary(trials: Iterable[FrozenTrial], metrics: Sequence[str]) -> str | None:
    """The simulator's error over a study's finished trials in words, for each of ``metrics`` that some
    trial has both predicted and measured: "output_throughput median 10 %, max 19 % (11 trials)"; None
    when no trial has a prediction and a measurement. Errors are :func:`prediction_errors`' (absolute)."""
    per: dict[str, list[float]] = {m: [] for m in metrics}
    for t in trials:
        if t.state not in FINISHED_STATES:
            continue
        errs = trial_errors(t)
        for m in metrics:
            if m in errs:
                per[m].append(abs(errs[m]))
    parts = [
        f"{m} median {statistics.median(v):.0%}, max {max(v):.0%} ({len(v)} trials)"
        for m, v in per.items()
        if v
    ]
    return "; ".join(parts).replace("%", " %") or None
