"""The simulator's view of a study: a warm start for the real search, and a prediction beside every trial.

:func:`sim_target` is the study as the simulator (:mod:`tuner.sim`) runs it, or :class:`PriorUnavailable`
with one line; :func:`warm_start` queues the simulator's best distinct configurations after the baseline
(``prior.sim``); :func:`store_prediction` stores the simulator's prediction beside each trial
(``prior.predict``) and :func:`refit_study` refits the simulator's constants to the study's measured trials
after each one (``prior.refit``, stored as :data:`ATTR_SIM_REFIT`). Simulated trials are never told to the
real study: TPE learns from real measurements alone (docs/warmstart.md says why).

Import from here; the private modules hold one concept each, and each module's docstring holds its
contract: ``_target`` (the study on the simulator, hardware choice, one prediction), ``_warm`` (the
simulated study and the warm start), ``_measured`` (a measurement by the names predictions use, and the
relative error), ``_predictions`` (a trial's stored prediction and its error) and ``_refit`` (the online
refit).
"""

from __future__ import annotations

from tuner.search.prior._measured import measured_metrics, prediction_errors
from tuner.search.prior._predictions import (
    REFIT_N,
    error_summary,
    prediction_refit_n,
    store_prediction,
    stored_prediction,
    trial_errors,
)
from tuner.search.prior._refit import observations, refit_study, refit_summary, stored_refit
from tuner.search.prior._target import CPU_PROFILE, PriorUnavailable, SimTarget, predict_for, sim_target
from tuner.search.prior._warm import (
    FAILED_VIOLATION,
    TIE,
    Params,
    as_told,
    simulated_study,
    top_distinct,
    warm_start,
    warm_start_rank,
)
from tuner.search.prior._warm import _params_of as _params_of  # a queued trial's params, for the tests
from tuner.search.record import ATTR_SIM_REFIT

__all__ = [
    "ATTR_SIM_REFIT",
    "CPU_PROFILE",
    "FAILED_VIOLATION",
    "REFIT_N",
    "TIE",
    "Params",
    "PriorUnavailable",
    "SimTarget",
    "as_told",
    "error_summary",
    "measured_metrics",
    "observations",
    "predict_for",
    "prediction_errors",
    "prediction_refit_n",
    "refit_study",
    "refit_summary",
    "sim_target",
    "simulated_study",
    "store_prediction",
    "stored_prediction",
    "stored_refit",
    "top_distinct",
    "trial_errors",
    "warm_start",
    "warm_start_rank",
]
