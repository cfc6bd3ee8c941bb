"""Writing a finished trial's record: :func:`write` / :func:`result_attrs`.

A finished trial stores, beside the keys the loop sets while it runs (baseline, run params, compile key,
worker, heartbeat): ``status``, ``failure``, ``message``, ``feasible``, ``argv``, ``log_path``,
``log_tail``, ``vllm_version``, ``hardware``, ``started_at``, ``ended_at``, ``launched`` and ``result``: the
measurement (:meth:`tuner.measure.result.TrialResult.to_dict` without the fields stored at the top level).

**What optuna-dashboard reads.** Beside the nested record, a finished trial stores a few flat copies of
what people filter and sort on (:func:`result_attrs`): ``slo_verdict`` (``pass`` / ``fail``; absent when
nothing was measured), the scored load (``scored_concurrency`` or ``scored_request_rate``) and each SLO
percentile at the scored step under vLLM's spelling (``p99_ttft_ms``: :func:`slo_attr`), next to
``status`` and ``failure`` (the failure class). Readers use the nested record; the flat keys exist for
the dashboard. Constraints are stored by :func:`write` in both of Optuna's forms: one system attribute per
constraint (``constraints:ttft_p99``, Optuna 5's, what ``Trial.set_constraint`` writes) and, in studies
created with ``constraints_as_list`` (every study since this rule; older ones keep one form so that all
their trials carry the same constraints, as the GP sampler demands), the single ``constraints`` list in
the order of the study's ``constraint_keys`` — the form optuna-dashboard shows. Optuna merges both forms,
so ``FrozenTrial.constraints`` lists each constraint twice (by name and by index) and a violation sum is
doubled, alike for every trial of such a study (feasibility and the order of infeasible trials do not
change). The study's objective names are Optuna's ``metric_names`` (set by :mod:`tuner.search.study`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna

from tuner.measure.result import TrialResult
from tuner.search.objectives import Evaluation
from tuner.search.record._keys import (
    ATTR_ARGV,
    ATTR_CONSTRAINTS_AS_LIST,
    ATTR_ENDED_AT,
    ATTR_FAILURE,
    ATTR_FEASIBLE,
    ATTR_HARDWARE,
    ATTR_LAUNCHED,
    ATTR_LOG_PATH,
    ATTR_LOG_TAIL,
    ATTR_MESSAGE,
    ATTR_RESULT,
    ATTR_SCORED_CONCURRENCY,
    ATTR_SCORED_RATE,
    ATTR_SLO_VERDICT,
    ATTR_STARTED_AT,
    ATTR_STATUS,
    ATTR_VLLM_VERSION,
    CONSTRAINTS_LIST,
)
from tuner.search.record._records import refused_before_launch

#: lines of the server log kept with a trial
LOG_TAIL_LINES = 40
#: fields of ``TrialResult.to_dict()`` stored at the top level, so left out of the nested ``result``
_TOP_LEVEL = ("status", "argv", "log", "message", "log_tail", "started_at", "ended_at")


def result_attrs(result: TrialResult, ev: Evaluation) -> dict[str, Any]:
    """The user attributes stored for a finished trial (JSON-safe: non-finite numbers become null)."""
    env = result.env or {}
    measured = {k: v for k, v in result.to_dict().items() if k not in _TOP_LEVEL}
    attrs: dict[str, Any] = _json_safe(
        {
            ATTR_STATUS: result.status,
            ATTR_FAILURE: None if result.ok and ev.failure is None else (ev.failure or result.status),
            ATTR_MESSAGE: result.message,
            ATTR_FEASIBLE: ev.feasible,
            **_flat(result, ev),
            ATTR_ARGV: list(result.argv),
            ATTR_LOG_PATH: result.log_path,
            ATTR_LOG_TAIL: list(result.log_tail)[-LOG_TAIL_LINES:],
            ATTR_VLLM_VERSION: env.get("vllm_version"),
            ATTR_HARDWARE: env.get("hardware"),
            ATTR_STARTED_AT: result.started_at,
            ATTR_ENDED_AT: result.ended_at,
            ATTR_LAUNCHED: launched(result),
            ATTR_RESULT: measured,
        }
    )
    return attrs


def slo_attr(metric: str) -> str:
    """The flat attribute of an SLO metric, in vLLM's spelling: ``ttft_p99`` -> ``p99_ttft_ms``."""
    base, _, pct = metric.rpartition("_")
    return f"{pct}_{base}_ms"


def _flat(result: TrialResult, ev: Evaluation) -> dict[str, Any]:
    """The flat copies for optuna-dashboard (module docstring); keys without a value are left out."""
    load = result.summary.load if result.summary is not None and ev.failure is None else {}
    flat: dict[str, Any] = {
        ATTR_SLO_VERDICT: None if ev.failure is not None else ("pass" if ev.feasible else "fail"),
        ATTR_SCORED_CONCURRENCY: load.get("concurrency"),
        ATTR_SCORED_RATE: load.get("request_rate"),
        **{slo_attr(m): v for m, v in ev.observed.items()},
    }
    return {k: v for k, v in flat.items() if v is not None}


def write(
    trial: optuna.Trial,
    result: TrialResult,
    evaluation: Evaluation,
    redact: Callable[[Any], Any] = lambda attrs: attrs,
    after_first: Callable[[], None] | None = None,
    *,
    as_list: bool = True,
) -> dict[str, Any]:
    """Store :func:`result_attrs` (passed through ``redact`` first) as ``trial``'s user attributes, one key
    at a time in their order (``after_first`` is called once the first is stored), then the evaluation's
    constraints, one per key and (``as_list``: the study's ``constraints_as_list``) as Optuna's single
    list; returns the attributes stored. The state and objective values are the caller's (``tell``)."""
    attrs: dict[str, Any] = redact(result_attrs(result, evaluation))
    for i, (k, v) in enumerate(attrs.items()):
        trial.set_user_attr(k, v)
        if i == 0 and after_first is not None:
            after_first()
    for k, c in evaluation.constraints.items():
        trial.set_constraint(k, c)
    if as_list:
        db = trial.storage
        study_id = db.get_study_id_from_name(trial.study.study_name)
        trial_id = db.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        db.set_trial_system_attr(trial_id, CONSTRAINTS_LIST, list(evaluation.constraints.values()))
    return attrs


def constraint_system_attrs(evaluation: Evaluation, as_list: bool) -> dict[str, Any]:
    """The constraint system attributes :func:`write` stores, for a trial made whole
    (``optuna.trial.create_trial(system_attrs=...)``)."""
    attrs: dict[str, Any] = {f"{CONSTRAINTS_LIST}:{k}": c for k, c in evaluation.constraints.items()}
    if as_list:
        attrs[CONSTRAINTS_LIST] = list(evaluation.constraints.values())
    return attrs


def constraints_as_list(study: optuna.Study) -> bool:
    """Do ``study``'s trials store the ``constraints`` list (module docstring)?"""
    return study.user_attrs.get(ATTR_CONSTRAINTS_AS_LIST) is True


def launched(result: TrialResult) -> bool:
    """Did the trial start a server? Not when a rule or the memory check refused it before launch."""
    return not refused_before_launch(result.status, result.memory_check, result.startup_s)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
