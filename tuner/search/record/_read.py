"""Reading a stored trial or study back: :func:`read` -> :class:`TrialRecord`, :func:`read_study` ->
:class:`StudyRecord`. Any stored record reads: records written before the nested duplicates were dropped
(``result.status``, ``result.argv``...) and records whose ``result`` was stored as text read the same;
a field the record lacks (a running trial, an older tuner) reads as ``None`` or empty."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.search.record._keys import (
    ATTR_ARGV,
    ATTR_BASELINE,
    ATTR_BASELINE_FLAGS,
    ATTR_BUDGET,
    ATTR_COMPILE_KEY,
    ATTR_CONSTRAINT_KEYS,
    ATTR_CREATED_AT,
    ATTR_DIRECTIONS,
    ATTR_ENDED_AT,
    ATTR_FAILURE,
    ATTR_FEASIBLE,
    ATTR_HARDWARE,
    ATTR_HEARTBEAT,
    ATTR_INTERRUPTED,
    ATTR_LAUNCHED,
    ATTR_LOG_PATH,
    ATTR_LOG_TAIL,
    ATTR_MESSAGE,
    ATTR_METRIC_NAMES,
    ATTR_REPEAT_OF,
    ATTR_REQUEUED_FROM,
    ATTR_RESULT,
    ATTR_RUN_PARAMS,
    ATTR_SPEC,
    ATTR_STARTED_AT,
    ATTR_STATUS,
    ATTR_TRAFFIC_DIGEST,
    ATTR_TUNER_VERSION,
    ATTR_VLLM_VERSION,
)
from tuner.search.record._records import CompileKeyRecord, StoredResult, StudyRecord, TrialRecord


def read(t: FrozenTrial) -> TrialRecord:
    """``t``'s stored record; any stored record reads, old layouts included (module docstring)."""
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


def trial_seconds(t: FrozenTrial) -> float | None:
    """Start to completion of a finished trial (None while it runs)."""
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()
