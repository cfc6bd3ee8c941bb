"""Online calibration of the simulator's constants to a study's own measurements (``prior.refit``).

Contract: :func:`refit_study` — after each trial is told, the efficiency constants refit
(:func:`tuner.sim.refit.refit`) to the study's measured trials (:func:`observations`: finished, ``ok``, a
scored step not cut short, at its measured load) and stored as the study's ``sim_refit`` attribute
(:data:`tuner.search.record.ATTR_SIM_REFIT`); a failure is one line, never the trial's.
:func:`stored_refit` reads it back onto a profile, :func:`refit_summary` in words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial

from tuner.config.spec import StudySpec
from tuner.search.prior._measured import measured_metrics
from tuner.search.prior._target import PriorUnavailable, SimTarget, sim_target
from tuner.search.record import ATTR_SIM_REFIT, FINISHED_STATES, TrialRecord, read
from tuner.sim.hardware import Hardware
from tuner.sim.refit import MAX_OBS, Observation, Refit, refit
from tuner.sim.refit import describe as describe_refit


def observations(trials: Sequence[FrozenTrial], target: SimTarget) -> list[Observation]:
    """The measured trials of ``trials`` as :class:`tuner.sim.refit.Observation` (module docstring), in
    trial order, in the simulator's clock; a trial the simulator cannot replay is left out."""
    out: list[Observation] = []
    for t in sorted(trials, key=lambda t: t.number):
        rec = read(t)
        o = _observation(rec, target) if rec.finished and not rec.failed else None
        if o is not None:
            out.append(o)
    return out


def _observation(rec: TrialRecord, target: SimTarget) -> Observation | None:
    summary = rec.result.metrics if rec.result is not None else None
    if not summary or summary.get("pruned"):
        return None
    load = summary.get("load")
    load = load if isinstance(load, Mapping) else {}
    s = target.time_scale
    level = load.get("request_rate") or load.get("concurrency")
    is_rate = bool(load.get("request_rate"))
    n = load.get("requests") or summary.get("completed")
    if not isinstance(n, int) or n < 1 or not isinstance(level, int | float) or level <= 0:
        return None
    cfg = target.config(rec.run_params)
    if cfg is None:
        return None
    workload = target.workload.with_(
        concurrency=None if is_rate else max(1, int(level)),
        rate=float(level) * s if is_rate else None,
        requests=n,
    )
    measured = {k: (v * s if "throughput" in k else v / s) for k, v in measured_metrics(summary).items()}
    return Observation(cfg, workload, measured, rec.number)


def stored_refit(study: optuna.Study, base: Hardware) -> Refit | None:
    """The study's stored refit applied to ``base``; None without one (or one made on another profile)."""
    d = study.user_attrs.get(ATTR_SIM_REFIT)
    return Refit.from_dict(d, base) if isinstance(d, Mapping) else None


def refit_summary(study: optuna.Study) -> str | None:
    """The study's stored refit in words (:func:`tuner.sim.refit.describe`); None without one."""
    d = study.user_attrs.get(ATTR_SIM_REFIT)
    return describe_refit(d) if isinstance(d, Mapping) else None


def refit_study(study: optuna.Study, spec: StudySpec) -> str | None:
    """With ``prior.predict`` and ``prior.refit``: refit the simulator's constants to the study's measured
    trials and store the result (``ATTR_SIM_REFIT``) when there is a new one to fit; never raises. Returns
    a line to show when the refit failed, else None."""
    prior = spec.prior
    if prior is None or not prior.predict or not prior.refit:
        return None
    try:
        target = sim_target(spec)
        obs = observations(study.get_trials(deepcopy=False, states=FINISHED_STATES), target)
        if not obs:
            return None
        before = stored_refit(study, target.hardware)
        if before is not None and before.trials == tuple(o.label for o in obs[-MAX_OBS:]):
            return None  # nothing new measured (a failed trial): the stored refit stands
        study.set_user_attr(ATTR_SIM_REFIT, refit(target.hardware, obs, max_obs=MAX_OBS).to_dict())
    except PriorUnavailable:
        return None
    except Exception as e:  # an extra: never the trial's cost
        return f"simulator refit skipped: {type(e).__name__}: {e}"
    return None
