"""The study loop: ask Optuna for a configuration, measure it, tell the result; resumable after anything.

Contract of :func:`run_study`:

* **Study** — the Optuna study named ``spec.name`` in the storage (created, or continued), directions from
  ``spec.objectives``. Study user attributes: ``spec`` (the study file as JSON), ``n_trials`` (the budget),
  ``metric_names``, ``directions``, ``constraint_keys``, ``created_at``, ``tuner_version``. Nothing is
  written before the study file, the search space, the storage URL and (for an existing study) its
  objectives are checked, so bad input leaves a database byte-identical.
* **Budget** — ``n_trials`` (given: stored for later runs; else the stored one; else ``spec.n_trials``)
  counts COMPLETE trials: measured, failed by configuration and refused by a pre-launch rule alike. Trials
  lost to an interruption are FAIL and do not count. Trials running in other live workers count as
  "under way", so workers sharing a study stop together at the budget; a worker that finds itself past the
  budget after ``ask`` (two workers asked at once) gives its trial back (FAIL, user attr ``surplus``, its
  queued params queued again).
* **Baseline** — with ``spec.baseline`` true (or a mapping of flag values), the creator of the study queues
  it first, so it is trial 0: no Optuna params, user attr ``is_baseline``; a mapping's flags are passed to
  the trial function as params and stored in user attr ``baseline_flags`` (they are not Optuna params).
* **Trial** — ``space.suggest`` picks the params; a configuration refused by
  :func:`tuner.config.space.prelaunch_violation` is told at once as ``infeasible`` without calling ``trial_fn``;
  otherwise ``trial_fn`` measures it. The result is told COMPLETE with the values and constraints of
  :func:`tuner.search.objectives.evaluate` (failures included: they are infeasible, never dropped). Trial user
  attributes: ``status``, ``failure``, ``message``, ``feasible``, ``argv``, ``log_path``, ``log_tail``,
  ``vllm_version``, ``hardware``, ``started_at``, ``ended_at``, ``result`` (``TrialResult.to_dict()``),
  ``run_params``, ``is_baseline``, ``worker`` (host, pid, pid start time, boot id), ``heartbeat_at`` and
  ``compile_key`` (``key``, ``cache``, ``cached``: whether a trial in the same vLLM compile cache had
  started a server with that key before; see :mod:`tuner.search.restart_cost`).
* **Restart cost** — with ``spec.compile_key_reuse`` ``rank`` or ``variants`` (default ``off``) and TPE, before
  each ``ask`` the sampler is given the trial costs learnt from the study's server starts, and ranks its
  candidates by expected improvement per second: configurations whose compile key vLLM has cached are
  preferred where TPE rates them about as promising.
* **Resume** — before each trial, every RUNNING trial whose worker is dead is marked FAIL with user attr
  ``interrupted`` and its params queued again (``enqueue_trial``), unless a COMPLETE or queued trial already
  has them. Dead means: same host and boot, and the pid is gone or now runs another process (start time);
  same host, another boot id; another host (or no worker record), no heartbeat for ``grace_s``. Queued
  params that finished meanwhile are not run again (the popped trial is FAIL with ``duplicate_of``).
  Servers left by dead tuners are stopped first (:func:`tuner.server.process.stop_leftover_servers`).
* **Ctrl-C** — the first one reaches ``trial_fn`` (which stops its server and raises KeyboardInterrupt);
  the trial is marked FAIL (``interrupted``), queued again, and :class:`~tuner.errors.Interrupted` is
  raised (exit 130). Outside a trial it stops the loop at the next safe point. A second Ctrl-C kills this
  process's servers and leaves at once (``os._exit(130)``); the trial is repaired on resume.
* **Timeout** — no new trial starts once the time left is shorter than the mean duration of the launched
  trials so far.
* **Workers** — any number of processes may run the same study on one database: storage calls are atomic
  (see :mod:`tuner.search.storage`), so trial numbers are unique and no queued trial runs twice.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from tuner import __version__
from tuner.config.argv import Param, trial_flags
from tuner.config.space import distributions, prelaunch_violation, suggest
from tuner.config.spec import FlagValue, StudySpec, default_storage, runs_dir
from tuner.errors import Interrupted, TrialFailure, UsageError
from tuner.measure.result import TrialResult
from tuner.progress import NullReporter, Reporter
from tuner.search.objectives import Evaluation, constraint_keys, evaluate
from tuner.search.record import (
    ATTR_BASELINE,
    ATTR_BASELINE_FLAGS,
    ATTR_BUDGET,
    ATTR_COMPILE_KEY,
    ATTR_HEARTBEAT,
    ATTR_INTERRUPTED,
    ATTR_LAUNCHED,
    ATTR_REQUEUED_FROM,
    ATTR_SPEC,
    ATTR_WORKER,
    result_attrs,
    study_launches,
    trial_seconds,
)
from tuner.search.restart_cost import RestartCost, cache_identity, compile_key, server_env
from tuner.search.samplers import make_sampler, set_trial_cost
from tuner.search.storage import open_storage, parse_url, sqlite_path, storage_errors
from tuner.server.failures import INFEASIBLE, INTERRUPTED

#: seconds between two heartbeats of a running trial
HEARTBEAT_S = 30.0
#: a trial of another host (or without a worker record) is dead after this long without a heartbeat
GRACE_S = 600.0
#: how long a worker that joins a study being created waits for its creator to finish the setup
JOIN_WAIT_S = 30.0

#: ids of the trials this process is running now (a RUNNING trial of this pid not listed here is an orphan)
_ACTIVE: set[int] = set()


class TrialFn(Protocol):
    """What measures one configuration (:func:`tuner.measure.trial.run_trial`, or a fake in tests)."""

    def __call__(
        self,
        spec: StudySpec,
        params: Mapping[str, Param],
        *,
        log_dir: Path,
        runtime_dir: Path,
        reporter: Reporter = ...,
    ) -> TrialResult: ...


@dataclass(frozen=True)
class StudyOutcome:
    """How a :func:`run_study` call ended."""

    study_name: str
    storage_url: str
    budget: int
    complete: int  # COMPLETE trials in the study at the end
    told: int  # trials this process finished
    stopped: str  # "budget" or "timeout"
    repaired: list[int]  # numbers of trials found interrupted and queued again


# ------------------------------------------------------------------------------------------------ workers


@dataclass(frozen=True)
class Worker:
    """Who runs a trial: enough to tell later whether that process is still alive."""

    host: str
    pid: int
    pid_start: int | None  # clock ticks since boot (Linux), tells a recycled pid apart
    boot_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "pid_start": self.pid_start, "boot_id": self.boot_id}


def this_worker() -> Worker:
    """The current process as a :class:`Worker`."""
    from tuner.server.process import process_starttime

    return Worker(socket.gethostname(), os.getpid(), process_starttime(os.getpid()), _boot_id())


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def trial_is_orphan(
    trial: FrozenTrial, *, now: float, grace_s: float = GRACE_S, me: Worker | None = None
) -> bool:
    """True when ``trial`` is RUNNING but the process running it is dead (see the module docstring)."""
    if trial.state != TrialState.RUNNING:
        return False
    from tuner.server.process import pid_alive, process_starttime

    me = me or this_worker()
    info = trial.user_attrs.get(ATTR_WORKER)
    heartbeat = trial.user_attrs.get(ATTR_HEARTBEAT)
    if not isinstance(heartbeat, int | float):
        start = trial.datetime_start
        heartbeat = start.timestamp() if start is not None else now
    if not isinstance(info, dict) or info.get("host") != me.host:
        return now - float(heartbeat) > grace_s
    if info.get("boot_id") and me.boot_id and info["boot_id"] != me.boot_id:
        return True
    pid = info.get("pid")
    if not isinstance(pid, int):
        return now - float(heartbeat) > grace_s
    if pid == me.pid and info.get("pid_start") == me.pid_start:
        return trial._trial_id not in _ACTIVE  # this process: orphan unless a loop of it runs the trial
    if not pid_alive(pid):
        return True
    recorded = info.get("pid_start")
    return isinstance(recorded, int) and process_starttime(pid) not in (None, recorded)


# -------------------------------------------------------------------------------------------- the study


def run_study(
    spec: StudySpec,
    *,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    storage_url: str | None = None,
    reporter: Reporter | None = None,
    trial_fn: TrialFn | None = None,
    must_exist: bool = False,
    runtime_dir: Path | None = None,
    log_root: Path | None = None,
    grace_s: float = GRACE_S,
    heartbeat_s: float = HEARTBEAT_S,
    handle_signals: bool = True,
) -> StudyOutcome:
    """Run (or continue) the study of ``spec`` to its budget. See the module docstring for the contract.

    ``must_exist`` (``tuner resume``) refuses to create a new study. ``trial_fn`` defaults to
    :func:`tuner.measure.trial.run_trial`. Server logs go to ``log_root/trial-NNNN/`` (default
    :func:`tuner.config.spec.runs_dir`); server pidfiles to ``runtime_dir`` (default ``$TUNER_RUNTIME_DIR``, else
    ``log_root/runtime``), which is also where servers of dead tuners are looked for. Raises :class:`~tuner.errors.UsageError` for bad input (before any
    write), :class:`~tuner.errors.StorageError`, or :class:`~tuner.errors.Interrupted` after Ctrl-C.
    """
    if n_trials is not None and n_trials <= 0:
        raise UsageError(f"--n-trials must be positive, got {n_trials}")
    url = storage_url or default_storage(spec)
    parse_url(url)
    dists = distributions(spec)
    _make_sampler(spec, dists, seed=spec.seed)  # refuses a sampler/space mismatch before anything is written
    rep: Reporter = reporter or NullReporter()
    if trial_fn is None:
        from tuner.measure.trial import run_trial

        trial_fn = run_trial
    path = sqlite_path(url)
    if must_exist and path is not None and not path.exists():
        raise UsageError(f"no study database at {path}: start the study with `tuner run`")
    log_root = log_root or runs_dir(spec)
    runtime_dir = runtime_dir or Path(os.environ.get("TUNER_RUNTIME_DIR") or log_root / "runtime")

    storage = open_storage(url, create=not must_exist)
    with storage_errors(url):
        study, created = _open_study(storage, spec, must_exist=must_exist)
        budget = _settle_budget(study, spec, n_trials, created)
        study.sampler = _make_sampler(spec, dists, seed=_seed(spec, created))

    from tuner.server.process import stop_leftover_servers

    killed = stop_leftover_servers(runtime_dir)
    if killed:
        rep.message(f"stopped {len(killed)} vLLM server(s) left by a dead tuner (process groups {killed})")

    loop = _Loop(spec, study, url, dists, budget, rep, trial_fn, runtime_dir, log_root, grace_s, heartbeat_s)
    deadline = (
        None
        if (timeout_s or spec.timeout_s) is None
        else time.time() + float(timeout_s or spec.timeout_s or 0)
    )
    with _SigintGuard(runtime_dir, enabled=handle_signals) as guard:
        loop.guard = guard
        stopped = loop.run(deadline)
    with storage_errors(url):
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return StudyOutcome(spec.name, url, budget, complete, loop.told, stopped, loop.repaired)


def _open_study(
    storage: optuna.storages.BaseStorage, spec: StudySpec, *, must_exist: bool
) -> tuple[optuna.Study, bool]:
    """Load the study, or create it (queueing the baseline first). Checks before it writes."""
    placeholder = optuna.samplers.RandomSampler()
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        study_id = None
    if study_id is None:
        if must_exist:
            raise UsageError(f"no study named {spec.name!r} in the database: start it with `tuner run`")
        try:
            study = optuna.create_study(
                storage=storage, study_name=spec.name, directions=_directions(spec), sampler=placeholder
            )
        except DuplicatedStudyError:
            pass  # another worker created it a moment ago
        else:
            _queue_baseline(study, spec)
            study.set_user_attr("created_at", _now_iso())
            _write_spec_attrs(study, spec)
            return study, True
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=placeholder)
    _check_compatible(study, spec)
    waited = 0.0
    while ATTR_BUDGET not in study.user_attrs and waited < JOIN_WAIT_S:
        time.sleep(0.2)  # its creator is still queueing the baseline
        waited += 0.2
    creator_died = ATTR_BUDGET not in study.user_attrs
    if creator_died and not any(t.user_attrs.get(ATTR_BASELINE) for t in study.get_trials(deepcopy=False)):
        _queue_baseline(study, spec)
    if study.user_attrs.get(ATTR_SPEC) != _spec_json(spec):
        _write_spec_attrs(study, spec)
    return study, False


def _check_compatible(study: optuna.Study, spec: StudySpec) -> None:
    directions = [d.name.lower() for d in study.directions]
    stored_metrics = study.user_attrs.get("metric_names")
    if directions != spec.direction_names or (
        stored_metrics is not None and stored_metrics != spec.metric_names
    ):
        have = stored_metrics or directions
        raise UsageError(
            f"study {spec.name!r} exists with objectives {have}, the file asks for {spec.metric_names}; "
            "give the study a new name"
        )


def _directions(spec: StudySpec) -> list[optuna.study.StudyDirection]:
    return [optuna.study.StudyDirection[d.upper()] for d in spec.direction_names]


def _spec_json(spec: StudySpec) -> dict[str, Any]:
    """The study file as stored: JSON data, secrets (``server.env`` tokens, ``api-key``) masked."""
    from tuner.config.redact import spec_data

    return spec_data(spec)


def _write_spec_attrs(study: optuna.Study, spec: StudySpec) -> None:
    study.set_user_attr(ATTR_SPEC, _spec_json(spec))
    study.set_user_attr("metric_names", spec.metric_names)
    study.set_user_attr("directions", spec.direction_names)
    study.set_user_attr("constraint_keys", constraint_keys(spec))
    study.set_user_attr("tuner_version", __version__)


def _settle_budget(study: optuna.Study, spec: StudySpec, n_trials: int | None, created: bool) -> int:
    stored = study.user_attrs.get(ATTR_BUDGET)
    if n_trials is not None:
        budget = n_trials
    elif isinstance(stored, int) and not created:
        budget = stored
    else:
        budget = spec.n_trials
    if stored != budget:
        study.set_user_attr(ATTR_BUDGET, budget)
    return int(budget)


def baseline_flags(spec: StudySpec) -> dict[str, FlagValue] | None:
    """The baseline's flags: ``{}`` for vLLM's defaults, a mapping when the study pins some, None for none."""
    raw: object = spec.baseline
    if isinstance(raw, dict):
        return dict(raw)
    return {} if raw else None


def _queue_baseline(study: optuna.Study, spec: StudySpec) -> None:
    flags = baseline_flags(spec)
    if flags is None:
        return
    attrs: dict[str, Any] = {ATTR_BASELINE: True}
    if flags:
        attrs[ATTR_BASELINE_FLAGS] = flags
    study.enqueue_trial({}, user_attrs=attrs, skip_if_exists=False)


def _seed(spec: StudySpec, created: bool) -> int | None:
    """The creator uses the file's seed (reproducible); a worker that joins derives its own from its pid,
    so that two workers do not propose the same configurations."""
    if spec.seed is None:
        return None
    return spec.seed if created else (spec.seed * 1_000_003 + os.getpid()) % 2**31


def _make_sampler(
    spec: StudySpec, dists: dict[str, BaseDistribution], *, seed: int | None
) -> optuna.samplers.BaseSampler:
    """The file's sampler over the whole search space (constraints are set on each trial, so none here)."""
    return make_sampler(
        spec.sampler, seed=seed, n_objectives=len(spec.objectives), constraints_func=None, search_space=dists
    )


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ the loop


class _Loop:
    """One worker's trial loop (state shared by the steps of :func:`run_study`)."""

    def __init__(
        self,
        spec: StudySpec,
        study: optuna.Study,
        url: str,
        dists: dict[str, BaseDistribution],
        budget: int,
        reporter: Reporter,
        trial_fn: TrialFn,
        runtime_dir: Path,
        log_root: Path,
        grace_s: float,
        heartbeat_s: float,
    ) -> None:
        self.spec, self.study, self.url, self.dists, self.budget = spec, study, url, dists, budget
        self.reporter, self.trial_fn, self.runtime_dir, self.log_root = (
            reporter,
            trial_fn,
            runtime_dir,
            log_root,
        )
        self.grace_s, self.heartbeat_s = grace_s, heartbeat_s
        self.me = this_worker()
        self.told = 0
        self.repaired: list[int] = []
        self.guard: _SigintGuard | None = None
        self.cache = cache_identity(server_env(spec.server.env))
        mode = spec.compile_key_reuse
        self.cost_aware = mode != "off" and set_trial_cost(study.sampler, None, mode)
        self.cost: RestartCost | None = None

    # -- the steps

    def run(self, deadline: float | None) -> str:
        """Trials until the budget (or the deadline); returns why it stopped: "budget" or "timeout"."""
        while True:
            self._check_interrupt()
            with storage_errors(self.url):
                stop = self._should_stop(deadline)
                if stop is not None:
                    return stop
                self.cost = self._learn_cost()
                if self.cost_aware:
                    set_trial_cost(self.study.sampler, self.cost, self.spec.compile_key_reuse)
                trial = self.study.ask()
            _ACTIVE.add(trial._trial_id)
            try:
                with storage_errors(self.url):
                    if self._surplus(trial):
                        return "budget"
                    run_params = self._prepare(trial)
                if run_params is None:
                    continue
                result = self._measure(trial, run_params)
                with storage_errors(self.url):
                    frozen = self._tell(trial, result)
            finally:
                _ACTIVE.discard(trial._trial_id)
            self.told += 1
            self.reporter.trial_finished(trial.number, result.status, self._headline(frozen, result))

    def _should_stop(self, deadline: float | None) -> str | None:
        """Repair orphans, then: "budget" when finished + running trials fill it, "timeout" when one more
        trial would not fit before ``deadline``, else None."""
        repaired = repair_orphans(self.study, self.spec, grace_s=self.grace_s, me=self.me)
        if repaired:
            self.reporter.message(
                f"trial(s) {repaired} had lost their worker: marked interrupted, queued again"
            )
        self.repaired += repaired
        trials = self.study.get_trials(deepcopy=False)
        under_way = sum(t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trials)
        if under_way >= self.budget:
            return "budget"
        if deadline is not None and not _fits(trials, deadline):
            self.reporter.message("timeout: the time left would not fit one more trial")
            return "timeout"
        return None

    def _prepare(self, trial: optuna.Trial) -> dict[str, Param] | None:
        """Suggest the params and record who runs the trial; returns the params for the trial function,
        or None when the trial is a queued copy of params that finished meanwhile (then it is FAIL)."""
        attrs = dict(trial.user_attrs)
        is_base = bool(attrs.get(ATTR_BASELINE))
        params: dict[str, Param] = {} if is_base else suggest(trial, self.spec)
        if ATTR_REQUEUED_FROM in attrs:
            twin = _finished_twin(self.study, params, is_base)
            if twin is not None:
                trial.set_user_attr("duplicate_of", twin)
                self.study.tell(trial, state=TrialState.FAIL)
                return None
        run_params = dict(params)
        if is_base:
            stored = attrs.get(ATTR_BASELINE_FLAGS)
            run_params = dict(stored) if isinstance(stored, dict) else dict(baseline_flags(self.spec) or {})
        trial.set_user_attr(ATTR_BASELINE, is_base)
        trial.set_user_attr("run_params", run_params)
        key = self._key_of(run_params)
        compiled = self.cost is not None and key in self.cost.compiled
        trial.set_user_attr(ATTR_COMPILE_KEY, {"key": key, "cache": self.cache, "cached": compiled})
        trial.set_user_attr(ATTR_WORKER, self.me.to_dict())
        trial.set_user_attr(ATTR_HEARTBEAT, time.time())
        return run_params

    def _key_of(self, params: Mapping[str, Any]) -> str:
        flags, model = trial_flags(self.spec, params)
        return compile_key(flags, model)

    def _learn_cost(self) -> RestartCost:
        """Trial costs and compiled keys from this study's finished trials (see :mod:`tuner.search.restart_cost`)."""
        launches = study_launches(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return RestartCost.learn(launches, cache=self.cache, key_of=self._key_of)

    def _check_interrupt(self) -> None:
        if self.guard is not None and self.guard.count:
            raise Interrupted(
                f"interrupted; continue with: tuner resume {self.spec.source or self.spec.name}"
            )

    def _surplus(self, trial: optuna.Trial) -> bool:
        """True (and the trial given back) when trials numbered before it already fill the budget."""
        ahead = sum(
            t.number < trial.number
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        )
        if ahead < self.budget:
            return False
        trial.set_user_attr("surplus", True)
        self.study.tell(trial, state=TrialState.FAIL)
        frozen = self.study._storage.get_trial(trial._trial_id)
        requeue(self.study, frozen, self.spec)
        return True

    def _measure(self, trial: optuna.Trial, run_params: dict[str, Param]) -> TrialResult:
        """Run the trial function (or refuse by rule); on interruption or error, give the trial back."""
        self.reporter.trial_started(trial.number, self.budget, dict(run_params))
        flags, _model = trial_flags(self.spec, run_params)
        reason = prelaunch_violation(flags)
        if reason is not None:
            now = time.time()
            return TrialResult(
                status=INFEASIBLE, message=reason, flags=dict(flags), started_at=now, ended_at=now
            )
        log_dir = self.log_root / f"trial-{trial.number:04d}"
        beat = _Heartbeat(self.study, trial, self.heartbeat_s)
        try:
            if self.guard is not None:
                self.guard.in_trial = True
                if self.guard.count:  # Ctrl-C came while the trial was being set up
                    raise KeyboardInterrupt
            with beat:
                result = self.trial_fn(
                    self.spec,
                    run_params,
                    log_dir=log_dir,
                    runtime_dir=self.runtime_dir,
                    reporter=self.reporter,
                )
        except KeyboardInterrupt:
            self._give_back(trial, {ATTR_INTERRUPTED: True})
            raise Interrupted(
                f"interrupted; trial {trial.number} queued again; continue with: "
                f"tuner resume {self.spec.source or self.spec.name}"
            ) from None
        except TrialFailure as e:  # run_trial should return these; accept them anyway
            result = TrialResult(
                status=e.failure, message=str(e), log_tail=list(e.log_tail), log_path=e.log_path
            )
        except BaseException as e:
            self._give_back(trial, {"error": f"{type(e).__name__}: {e}"[:500]})
            raise
        finally:
            if self.guard is not None:
                self.guard.in_trial = False
        if result.status == INTERRUPTED:
            self._give_back(trial, {ATTR_INTERRUPTED: True})
            raise Interrupted(
                f"interrupted; continue with: tuner resume {self.spec.source or self.spec.name}"
            )
        return result

    def _give_back(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        """Mark our own trial FAIL (not a verdict on its configuration) and queue its params again."""
        with storage_errors(self.url):
            try:
                for k, v in attrs.items():
                    trial.set_user_attr(k, v)
                self.study.tell(trial, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                return  # another worker already declared it dead and queued it again
            requeue(self.study, self.study._storage.get_trial(trial._trial_id), self.spec)

    def _tell(self, trial: optuna.Trial, result: TrialResult) -> FrozenTrial:
        from tuner.config.redact import spec_redactor

        self.reporter.phase("saving")
        ev = evaluate(self.spec, result)
        attrs = spec_redactor(self.spec).obj(result_attrs(result, ev))
        try:
            for i, (k, v) in enumerate(attrs.items()):
                trial.set_user_attr(k, v)
                if i == 0:
                    pause_for_tests("saving", trial.number)
            for k, c in ev.constraints.items():
                trial.set_constraint(k, c)
            return self.study.tell(trial, ev.values)
        except UpdateFinishedTrialError:
            # another worker took this trial for dead (no heartbeat) and queued it again: keep the result
            # as a trial of its own; the queued copy will find it and not run again
            return self._add_copy(trial, result, ev, attrs)

    def _add_copy(
        self, trial: optuna.Trial, result: TrialResult, ev: Evaluation, attrs: dict[str, Any]
    ) -> FrozenTrial:
        frozen = self.study._storage.get_trial(trial._trial_id)
        copy = optuna.trial.create_trial(
            params=dict(frozen.params),
            distributions=dict(frozen.distributions),
            values=ev.values,
            user_attrs={**frozen.user_attrs, **attrs, "copy_of": trial.number},
        )
        for k, c in ev.constraints.items():
            copy.set_constraint(k, c)
        self.study.add_trial(copy)
        self.reporter.message(
            f"trial {trial.number} had been taken for dead; its result is stored as a new trial"
        )
        mine = [
            t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("copy_of") == trial.number
        ]
        return mine[-1]

    def _headline(self, frozen: FrozenTrial, result: TrialResult) -> str:
        from tuner.report.pareto import best_so_far, format_values

        if result.status != "ok":
            head = result.message or result.status
        else:
            verdict = "feasible" if frozen.user_attrs.get("feasible") else "SLO broken"
            head = f"{format_values(self.spec.metric_names, frozen.values)} ({verdict})"
        best = best_so_far(self.study, self.spec.metric_names)
        return f"{head} · best so far: {best}" if best else head


def _fits(trials: list[FrozenTrial], deadline: float) -> bool:
    """Is there time for one more trial? Mean duration of the launched COMPLETE trials (none: yes)."""
    left = deadline - time.time()
    if left <= 0:
        return False
    durations = [
        took
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.user_attrs.get(ATTR_LAUNCHED)
        and (took := trial_seconds(t)) is not None
    ]
    return not durations or left >= sum(durations) / len(durations)


# ---------------------------------------------------------------------------------------- resume pieces


def repair_orphans(
    study: optuna.Study, spec: StudySpec, *, grace_s: float = GRACE_S, me: Worker | None = None
) -> list[int]:
    """Mark every RUNNING trial of a dead worker FAIL (``interrupted``) and queue its params again.

    Safe with several workers: the state change is atomic, and only the worker that made it re-queues.
    Returns the numbers of the trials repaired by this call.
    """
    now = time.time()
    me = me or this_worker()
    repaired: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not trial_is_orphan(t, now=now, grace_s=grace_s, me=me):
            continue
        storage = study._storage
        try:
            storage.set_trial_user_attr(t._trial_id, ATTR_INTERRUPTED, True)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue
        repaired.append(t.number)
        requeue(study, storage.get_trial(t._trial_id), spec)
    return repaired


def requeue(study: optuna.Study, trial: FrozenTrial, spec: StudySpec) -> bool:
    """Queue ``trial``'s params again, unless a COMPLETE or queued trial has them, or they are incomplete
    (interrupted while being suggested). Returns whether it queued."""
    is_base = bool(trial.user_attrs.get(ATTR_BASELINE))
    params: dict[str, Any] = (
        {} if is_base else dict(trial.params or trial.system_attrs.get("fixed_params") or {})
    )
    if not is_base and set(params) != set(spec.search):
        return False
    if _finished_twin(study, params, is_base) is not None:
        return False
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if (
            bool(t.user_attrs.get(ATTR_BASELINE)) == is_base
            and t.system_attrs.get("fixed_params", {}) == params
        ):
            return False
    attrs: dict[str, Any] = {ATTR_BASELINE: is_base, ATTR_REQUEUED_FROM: trial.number}
    if is_base and ATTR_BASELINE_FLAGS in trial.user_attrs:
        attrs[ATTR_BASELINE_FLAGS] = trial.user_attrs[ATTR_BASELINE_FLAGS]
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return True


def _finished_twin(study: optuna.Study, params: Mapping[str, Any], is_base: bool) -> int | None:
    """The number of a COMPLETE trial with the same params (and baseline-ness), or None."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if bool(t.user_attrs.get(ATTR_BASELINE)) == is_base and t.params == dict(params):
            return t.number
    return None


def pause_for_tests(phase: str, trial_number: int) -> None:
    """A test hook, inert unless ``TUNER_TEST_PAUSE_AT`` is ``phase`` or ``phase:trial_number``: then write
    the phase to the file ``TUNER_TEST_PAUSE_FILE`` (when set) and sleep, so that a test can ``kill -9`` this
    process at a known point. ``saving`` is reached in the middle of storing a trial's result (one
    attribute written, the trial still RUNNING)."""
    if os.environ.get("TUNER_TEST_PAUSE_AT") not in (phase, f"{phase}:{trial_number}"):
        return
    marker = os.environ.get("TUNER_TEST_PAUSE_FILE")
    if marker:
        Path(marker).write_text(phase)
    time.sleep(3600)


# ------------------------------------------------------------------------------------ heartbeat, signals


class _Heartbeat:
    """While a trial runs, a thread stores ``heartbeat_at`` every ``interval_s`` (for other hosts' resume)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval_s: float) -> None:
        self._storage = study._storage
        self._trial_id = trial._trial_id
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tuner-heartbeat", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.set_trial_user_attr(self._trial_id, ATTR_HEARTBEAT, time.time())
            except UpdateFinishedTrialError:
                return  # finished, or taken for dead by another worker
            except Exception:  # a missed beat is harmless: the grace period is many beats long
                continue


class _SigintGuard:
    """SIGINT while the loop runs: the first reaches the trial function (or stops the loop at the next safe
    point); the second kills this process's servers and exits at once with 130."""

    def __init__(self, runtime_dir: Path, *, enabled: bool) -> None:
        self.runtime_dir = runtime_dir
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.count = 0
        self.in_trial = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self) -> _SigintGuard:
        if self.enabled and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            self.enabled = False  # started with SIGINT ignored (a background job): keep it so
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            previous = self._previous
            signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2:
            force_exit(self.runtime_dir)
        if self.in_trial:
            from tuner.load.cancel import cancel_running_load

            if cancel_running_load():
                return  # the load unwinds and raises KeyboardInterrupt itself (see tuner.load.cancel)
            raise KeyboardInterrupt


def force_exit(runtime_dir: Path) -> None:
    """Kill the server groups this process owns (its pidfiles in ``runtime_dir``) and ``os._exit(130)``."""
    try:
        from tuner.server.process import read_pidfiles

        for _path, record in read_pidfiles(runtime_dir):
            if record.get("owner_pid") == os.getpid():
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int(record["pgid"]), signal.SIGKILL)
        sys.stderr.write("tuner: stopped at once; `tuner resume` repairs the interrupted trial\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


__all__ = [
    "StudyOutcome",
    "TrialFn",
    "Worker",
    "baseline_flags",
    "repair_orphans",
    "requeue",
    "run_study",
    "this_worker",
    "trial_is_orphan",
]
