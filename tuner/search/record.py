"""The stored trial record: the only module that knows the keys of the user attributes tuner stores.

Optuna owns the database; tuner keeps what it knows of a study and of each trial in Optuna's user
attributes. Writers go through :func:`write` / :func:`result_attrs` and the ``ATTR_*`` keys, readers through
:func:`read` (one trial as a typed :class:`TrialRecord`) and :func:`read_study` (a :class:`StudyRecord`), so
a key is spelt in one place.

A finished trial stores, beside the keys the loop sets while it runs (baseline, run params, compile key,
worker, heartbeat): ``status``, ``failure``, ``message``, ``feasible``, ``argv``, ``log_path``,
``log_tail``, ``vllm_version``, ``hardware``, ``started_at``, ``ended_at``, ``launched`` and ``result``: the
measurement (:meth:`tuner.measure.result.TrialResult.to_dict` without the fields stored at the top level).
Records written before the nested duplicates were dropped (``result.status``, ``result.argv``...) and
records whose ``result`` was stored as text read the same.

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

**States.** A finished trial of the search is COMPLETE (measured) or, since this rule, PRUNED (failed:
no valid values; :meth:`tuner.search.objectives.Evaluation.told` says when and why); older studies store
failed trials COMPLETE with penalty values. :data:`FINISHED_STATES` and :attr:`TrialRecord.finished` cover
both; a failure is told by ``status`` (:attr:`TrialRecord.failed`), never by the values, and
:attr:`TrialRecord.scored_values` hides the penalty values of old records.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.measure.result import TrialResult
from tuner.search.objectives import Evaluation
from tuner.search.restart_cost import Launch
from tuner.server.failures import INFEASIBLE

# study user attributes
ATTR_SPEC = "spec"
ATTR_BUDGET = "n_trials"
ATTR_METRIC_NAMES = "metric_names"
ATTR_DIRECTIONS = "directions"
ATTR_CONSTRAINT_KEYS = "constraint_keys"
ATTR_TUNER_VERSION = "tuner_version"
ATTR_CREATED_AT = "created_at"
ATTR_TRAFFIC_DIGEST = "traffic_digest"  # tuner.load.traffic.traffic_digest of the study's workload
ATTR_CONSTRAINTS_AS_LIST = "constraints_as_list"  # True: trials store the ``constraints`` list too
# trial user attributes
ATTR_BASELINE = "is_baseline"
ATTR_BASELINE_FLAGS = "baseline_flags"
ATTR_RUN_PARAMS = "run_params"
ATTR_RESULT = "result"
ATTR_WORKER = "worker"
ATTR_HEARTBEAT = "heartbeat_at"
ATTR_INTERRUPTED = "interrupted"
ATTR_REQUEUED_FROM = "requeued_from"
ATTR_REPEAT_OF = "repeat_of"  # a confirming re-measurement: the number of the trial it repeats
ATTR_LAUNCHED = "launched"
ATTR_COMPILE_KEY = "compile_key"
ATTR_STATUS = "status"
ATTR_FAILURE = "failure"
ATTR_MESSAGE = "message"
ATTR_FEASIBLE = "feasible"
ATTR_ARGV = "argv"
ATTR_LOG_PATH = "log_path"
ATTR_LOG_TAIL = "log_tail"
ATTR_VLLM_VERSION = "vllm_version"
ATTR_HARDWARE = "hardware"
ATTR_STARTED_AT = "started_at"
ATTR_ENDED_AT = "ended_at"
# flat copies for optuna-dashboard (module docstring)
ATTR_SLO_VERDICT = "slo_verdict"
ATTR_SCORED_CONCURRENCY = "scored_concurrency"
ATTR_SCORED_RATE = "scored_request_rate"
# trial system attribute: Optuna's single list of constraint values (what optuna-dashboard reads)
CONSTRAINTS_LIST = "constraints"

#: the Optuna states of a finished trial of the search (module docstring)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

#: lines of the server log kept with a trial
LOG_TAIL_LINES = 40
#: fields of ``TrialResult.to_dict()`` stored at the top level, so left out of the nested ``result``
_TOP_LEVEL = ("status", "argv", "log", "message", "log_tail", "started_at", "ended_at")


# ------------------------------------------------------------------------------------------------ write


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


def refused_before_launch(status: Any, memory_check: Any, startup_s: Any) -> bool:
    """True for a trial that started no server: refused by a rule (``infeasible``) or by the memory check
    (its verdict ``fits`` False, and no start recorded)."""
    by_memory = isinstance(memory_check, Mapping) and memory_check.get("fits") is False
    return status == INFEASIBLE or (by_memory and startup_s is None)


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


# ------------------------------------------------------------------------------------------------- read


@dataclass(frozen=True)
class StoredResult:
    """The measurement stored with a finished trial (``result``); mappings are as stored (JSON objects)."""

    metrics: Mapping[str, Any] | None = None  # the scored summary (``Summary.to_dict()``)
    steps: tuple[Mapping[str, Any], ...] = ()  # every capacity step (capacity mode only)
    scored_step: int | None = None
    startup_s: float | None = None  # launch to healthy
    flags: Mapping[str, Any] = field(default_factory=dict)  # the effective server flags
    env: Mapping[str, Any] = field(default_factory=dict)
    gpu: Mapping[str, Any] = field(default_factory=dict)
    server_metrics: Mapping[str, Any] = field(default_factory=dict)
    memory_check: Mapping[str, Any] = field(default_factory=dict)
    bottleneck: str | None = None
    #: capacity mode: levels, stop, bracket, load_s, pruned (``TrialResult.capacity``); {} before tuner had it
    capacity: Mapping[str, Any] = field(default_factory=dict)
    #: what was sent (``TrialResult.traffic``: kind, requests, token percentiles...); {} before tuner had it
    traffic: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompileKeyRecord:
    """The compile key a trial's server started with, the cache it used, and whether the key was compiled."""

    key: str
    cache: str | None
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``ATTR_COMPILE_KEY``'s value)."""
        return {"key": self.key, "cache": self.cache, "cached": self.cached}


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored. ``None`` where the record holds nothing (a running trial, an older tuner)."""

    number: int
    state: TrialState
    params: Mapping[str, Any]  # Optuna's params
    values: tuple[float, ...] | None
    is_baseline: bool
    baseline_flags: Mapping[str, Any] | None
    run_params: Mapping[str, Any]  # what it ran with: the stored run params, else ``params``
    status: str | None
    failure: str | None
    message: str | None
    feasible: bool | None
    argv: tuple[str, ...]
    log_path: str | None
    log_tail: tuple[str, ...]
    vllm_version: str | None
    hardware: str | None
    started_at: float | None
    ended_at: float | None
    launched: bool | None  # None: not recorded
    seconds: float | None  # start to completion in Optuna's clock (None while it runs)
    result: StoredResult | None  # None: no measurement stored
    compile_key: CompileKeyRecord | None
    interrupted: bool
    requeued_from: int | None
    #: a re-measurement by ``tuner confirm`` of trial ``repeat_of`` (same params, a fresh server start); None
    #: for a trial of the search. Repeats never count toward the budget nor appear as rows of the front.
    repeat_of: int | None = None
    heartbeat_at: float | None = None  # the last heartbeat of its worker (epoch s; None: none stored)

    @property
    def failed(self) -> bool:
        """Told as a failure: a status other than ``ok`` (no status counts as ``ok``)."""
        return self.status not in (None, "ok")

    @property
    def finished(self) -> bool:
        """A finished trial of the search: COMPLETE, or PRUNED (failed; module docstring)."""
        return self.state in FINISHED_STATES

    @property
    def scored_values(self) -> tuple[float, ...] | None:
        """The objective values of a measured trial; None for a failed one (PRUNED: none stored; older
        studies: the penalty values) and for one not finished."""
        return None if self.failed or self.state != TrialState.COMPLETE else self.values

    @property
    def refused_before_launch(self) -> bool:
        """Started no server (see :func:`refused_before_launch`)."""
        r = self.result or StoredResult()
        return refused_before_launch(self.status, r.memory_check, r.startup_s)


@dataclass(frozen=True)
class StudyRecord:
    """What tuner stored with a study (``None`` / empty where a study was not made by tuner)."""

    spec: Mapping[str, Any] | None
    budget: int | None
    metric_names: tuple[str, ...] | None
    directions: tuple[str, ...] | None
    constraint_keys: tuple[str, ...] | None
    tuner_version: str | None
    created_at: str | None
    traffic_digest: str | None = None  # None: stored by a tuner before traffic digests


def read(t: FrozenTrial) -> TrialRecord:
    """``t``'s stored record; any stored record reads, old layouts included (see the module docstring)."""
    a = t.user_attrs
    nested = _mapping(_parsed(a.get(ATTR_RESULT)))
    run = a.get(ATTR_RUN_PARAMS)

    def top(key: str, old: str | None = None) -> Any:  # the top-level key, else an old nested copy
        return a.get(key) or nested.get(old or key)

    return TrialRecord(
        number=t.number,
        state=t.state,
        params=dict(t.params),
        values=None if t.values is None else tuple(t.values),
        is_baseline=bool(a.get(ATTR_BASELINE)),
        baseline_flags=_mapping_or_none(a.get(ATTR_BASELINE_FLAGS)),
        run_params=dict(run) if isinstance(run, dict) else dict(t.params),
        status=_str(top(ATTR_STATUS)),
        failure=_str(a.get(ATTR_FAILURE)),
        message=_str(top(ATTR_MESSAGE)),
        feasible=a.get(ATTR_FEASIBLE) if isinstance(a.get(ATTR_FEASIBLE), bool) else None,
        argv=tuple(str(w) for w in top(ATTR_ARGV) or ()),
        log_path=_str(top(ATTR_LOG_PATH, "log")),
        log_tail=tuple(str(w) for w in top(ATTR_LOG_TAIL) or ()),
        vllm_version=_str(a.get(ATTR_VLLM_VERSION)),
        hardware=_str(a.get(ATTR_HARDWARE)),
        started_at=_num(top(ATTR_STARTED_AT)),
        ended_at=_num(top(ATTR_ENDED_AT)),
        launched=bool(a[ATTR_LAUNCHED]) if a.get(ATTR_LAUNCHED) is not None else None,
        seconds=trial_seconds(t),
        result=_stored_result(nested) if nested else None,
        compile_key=_compile_key(a.get(ATTR_COMPILE_KEY)),
        interrupted=bool(a.get(ATTR_INTERRUPTED)),
        requeued_from=_int(a.get(ATTR_REQUEUED_FROM)),
        repeat_of=_int(a.get(ATTR_REPEAT_OF)),
        heartbeat_at=_num(a.get(ATTR_HEARTBEAT)),
    )


def read_study(study: optuna.Study) -> StudyRecord:
    """What tuner stored with ``study``."""
    a = study.user_attrs
    budget = a.get(ATTR_BUDGET)
    return StudyRecord(
        spec=_mapping_or_none(a.get(ATTR_SPEC)),
        budget=budget if isinstance(budget, int) and not isinstance(budget, bool) else None,
        metric_names=_strings(a.get(ATTR_METRIC_NAMES)),
        directions=_strings(a.get(ATTR_DIRECTIONS)),
        constraint_keys=_strings(a.get(ATTR_CONSTRAINT_KEYS)),
        tuner_version=_str(a.get(ATTR_TUNER_VERSION)),
        created_at=_str(a.get(ATTR_CREATED_AT)),
        traffic_digest=_str(a.get(ATTR_TRAFFIC_DIGEST)),
    )


def is_baseline(trial: optuna.Trial | FrozenTrial) -> bool:
    """Is ``trial`` (a running or a stored one) the baseline?"""
    return bool(trial.user_attrs.get(ATTR_BASELINE))


def repeat_of(trial: optuna.Trial | FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` (a running, queued or stored one) re-measures, or None."""
    return _int(trial.user_attrs.get(ATTR_REPEAT_OF))


def _stored_result(d: Mapping[str, Any]) -> StoredResult:
    steps = d.get("steps")
    scored = d.get("scored_step")
    bottleneck = d.get("bottleneck")
    return StoredResult(
        metrics=_mapping_or_none(d.get("metrics")),
        steps=tuple(s for s in steps if isinstance(s, dict)) if isinstance(steps, list) else (),
        scored_step=scored if isinstance(scored, int) else None,
        startup_s=_num(d.get("startup_s")),
        flags=_mapping(d.get("flags")),
        env=_mapping(d.get("env")),
        gpu=_mapping(d.get("gpu")),
        server_metrics=_mapping(d.get("server_metrics")),
        memory_check=_mapping(d.get("memory_check")),
        bottleneck=bottleneck if isinstance(bottleneck, str) else None,
        capacity=_mapping(d.get("capacity")),
        traffic=_mapping(d.get("traffic")),
    )


def _compile_key(rec: Any) -> CompileKeyRecord | None:
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
        return None
    cache = rec.get("cache")
    return CompileKeyRecord(
        key=rec["key"], cache=cache if isinstance(cache, str) else None, cached=bool(rec.get("cached"))
    )


def _parsed(value: Any) -> Any:
    """A ``result`` stored as text (JSON or a Python literal) as its object; anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None


def _mapping(v: Any) -> dict[str, Any]:
    return dict(v) if isinstance(v, dict) else {}


def _mapping_or_none(v: Any) -> dict[str, Any] | None:
    return dict(v) if isinstance(v, dict) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _strings(v: Any) -> tuple[str, ...] | None:
    return tuple(str(x) for x in v) if isinstance(v, list | tuple) else None


# ---------------------------------------------------------------------------------------------- launches


def launch_of(rec: TrialRecord) -> Launch | None:
    """The :class:`Launch` of a finished trial's record, or None for a trial without a compile-key record
    (refused before launch, or from a tuner before compile keys)."""
    if rec.compile_key is None:
        return None
    return Launch(
        key=rec.compile_key.key,
        cache=rec.compile_key.cache,
        cached=rec.compile_key.cached,
        startup_s=rec.result.startup_s if rec.result else None,
        trial_s=rec.seconds,
        params=None if rec.is_baseline else rec.params,
        launched=rec.launched is not False and not rec.refused_before_launch,
    )


def study_launches(trials: Sequence[FrozenTrial]) -> list[Launch]:
    """What the finished trials recorded about their server starts (:class:`tuner.search.restart_cost.Launch`)."""
    out = []
    for t in trials:
        launch = launch_of(read(t))
        if launch is not None:
            out.append(launch)
    return out


def trial_seconds(t: FrozenTrial) -> float | None:
    """Start to completion of a finished trial (None while it runs)."""
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()


# keys added for the loop
ATTR_SURPLUS = "surplus"
ATTR_DUPLICATE_OF = "duplicate_of"
ATTR_ERROR = "error"
ATTR_COPY_OF = "copy_of"
# the simulator's view (tuner.search.prior reads and writes them): a trial's prediction, a warm start's rank
ATTR_PREDICTION = "sim_prediction"
ATTR_WARM_START = "warm_start"
