"""The typed records :func:`tuner.search.record.read` and :func:`~tuner.search.record.read_study` return,
and the one rule of a trial that started no server (:func:`refused_before_launch`). Pure: no storage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from tuner.search.record._keys import FINISHED_STATES
from tuner.server.failures import INFEASIBLE


def refused_before_launch(status: Any, memory_check: Any, startup_s: Any) -> bool:
    """True for a trial that started no server: refused by a rule (``infeasible``) or by the memory check
    (its verdict ``fits`` False, and no start recorded)."""
    by_memory = isinstance(memory_check, Mapping) and memory_check.get("fits") is False
    return status == INFEASIBLE or (by_memory and startup_s is None)


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
        """A finished trial of the search: COMPLETE, or PRUNED (failed; :mod:`tuner.search.record._keys`)."""
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
