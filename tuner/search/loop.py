"""The study loop: ask Optuna for a configuration, measure it, tell the result; resumable after anything.

Contract of :func:`run_study` (the study, its budget, baseline and sampler: :mod:`tuner.search.study`;
worker records, liveness and resume: :mod:`tuner.search.workers`; Ctrl-C: :mod:`tuner.search.signals`):

* **Budget** — counts finished trials (:data:`tuner.search.record.FINISHED_STATES`): measured (COMPLETE),
  failed by configuration and refused by a pre-launch rule (PRUNED, or COMPLETE in older studies) alike.
  Trials lost to an interruption are FAIL and do not count. Trials running in other live workers
  count as "under way", so workers sharing a study stop together at the budget; a worker that finds itself
  past the budget after ``ask`` (two workers asked at once) gives its trial back (FAIL, user attr
  ``surplus``, its queued params queued again).
* **Trial** — before each trial, the trials of dead workers are repaired and queued again
  (:func:`tuner.search.workers.repair_orphans`); servers left by dead tuners were stopped first
  (:func:`tuner.server.procs.stop_leftover_servers`). ``space.suggest`` picks the params (the baseline has
  none: its ``baseline_flags`` are passed to ``trial_fn`` as params); queued params that finished meanwhile
  are not run again (the popped trial is FAIL with ``duplicate_of``). ``trial_fn`` measures the
  configuration (refusing one by a pre-launch rule itself, as :func:`tuner.measure.trial.run_trial` does);
  the result is told with the state, values and constraints of :mod:`tuner.search.tell` (failures
  included: infeasible, never dropped); every attribute stored is :mod:`tuner.search.record`'s.
* **Ctrl-C** — the first one reaches ``trial_fn`` (which stops its server and raises KeyboardInterrupt);
  the trial is marked FAIL (``interrupted``), queued again, and :class:`~tuner.errors.Interrupted` is
  raised (exit 130). Outside a trial it stops the loop at the next safe point. The second: see
  :mod:`tuner.search.signals`.
* **Confirm** — ``confirm`` (``tuner confirm``, or the study file's option once the budget is reached)
  runs the repeats :mod:`tuner.search.confirm` queues, instead of sampling; they never count toward it.
* **Timeout** — no new trial starts once the time left is shorter than the mean duration of the launched
  trials so far.
* **Parallel** — given GPUs, N trials run at once on disjoint GPU sets, with these same steps
  (:mod:`tuner.search.parallel`).
* **Progress** — the reporter hears ``trial_started``, the trial function's phases, ``phase("saving")``
  (:mod:`tuner.search.tell`) and ``trial_finished`` with a :class:`tuner.progress.FinishedTrial`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from tuner.config.paths import default_storage, runs_dir
from tuner.config.space import suggest
from tuner.config.spec import Confirm, FlagValue, StudySpec
from tuner.errors import Interrupted, TrialFailure
from tuner.measure.gpufree import GpuBusy
from tuner.measure.result import TrialResult
from tuner.progress import NullReporter, Reporter
from tuner.search import record, workers
from tuner.search.confirm import queue_repeats, waiting_repeats
from tuner.search.signals import SigintGuard
from tuner.search.storage import storage_errors
from tuner.search.study import OpenedStudy, baseline_flags, best_capacity, fits_before, open_study
from tuner.search.tell import tell
from tuner.search.trial_cost import TrialCosts
from tuner.server.failures import GPU_BUSY, INTERRUPTED
from tuner.server.procs import stop_leftover_servers


class TrialFn(Protocol):
    """What measures one configuration (:func:`tuner.measure.trial.run_trial`, or a fake in tests)."""

    def __call__(
        self,
        spec: StudySpec,
        params: Mapping[str, FlagValue],
        *,
        log_dir: Path,
        runtime_dir: Path,
        reporter: Reporter = ...,
        best_so_far: float | None = ...,
    ) -> TrialResult: ...


@dataclass(frozen=True)
class StudyOutcome:
    """How a :func:`run_study` call ended."""

    study_name: str
    storage_url: str
    budget: int
    complete: int  # finished trials of the search in the study at the end (repeats not counted)
    told: int  # trials this process finished, repeats included
    stopped: str  # "budget", "timeout" or "confirmed" (no repeat left to run)
    repaired: list[int]  # numbers of trials found interrupted and queued again
    repeats: int = 0  # repeats (``tuner confirm``) this process finished


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
    grace_s: float | None = None,
    heartbeat_s: float | None = None,
    handle_signals: bool = True,
    confirm: Confirm | None = None,
    accept_changes: bool = False,
    gpus: Sequence[str] = (),
) -> StudyOutcome:
    """Run (or continue) the study of ``spec`` to its budget. See the module docstring for the contract.

    ``must_exist`` (``tuner resume``) refuses to create a new study. ``trial_fn`` defaults to
    :func:`tuner.measure.trial.run_trial`. Server logs go to ``log_root/trial-NNNN/`` (default
    :func:`tuner.config.paths.runs_dir`); server pidfiles to ``runtime_dir`` (default ``$TUNER_RUNTIME_DIR``,
    else ``log_root/runtime``), which is also where servers of dead tuners are looked for. Raises
    :class:`~tuner.errors.UsageError` for bad input (before any write), :class:`~tuner.errors.StorageError`,
    or :class:`~tuner.errors.Interrupted` after Ctrl-C. ``confirm``: run the repeats it asks for instead
    of the search (see the module docstring). ``accept_changes``: go on with a study whose stored study file
    differs from ``spec`` in a way that invalidates its trials (:func:`tuner.search.study.open_study`).
    ``gpus`` (``tuner run --gpus``): run trials in parallel on these GPUs (:mod:`tuner.search.parallel`).
    ``grace_s``, ``heartbeat_s``: :func:`tuner.search.workers.heartbeat_grace_s` and its interval by default.
    """
    grace_s = workers.heartbeat_grace_s() if grace_s is None else grace_s  # before any write
    heartbeat_s = workers.heartbeat_interval_s(grace_s) if heartbeat_s is None else heartbeat_s
    opened = open_study(
        spec,
        storage_url or default_storage(spec),
        n_trials=n_trials,
        must_exist=must_exist,
        accept_changes=accept_changes,
    )
    if trial_fn is None:
        from tuner.measure.trial import run_trial  # the load generator's stack: only when measuring

        trial_fn = run_trial
    log_root = log_root or runs_dir(spec)
    runtime_dir = runtime_dir or Path(os.environ.get("TUNER_RUNTIME_DIR") or log_root / "runtime")
    rep: Reporter = reporter or NullReporter()
    for note in opened.notes:
        rep.message(note)
    killed = stop_leftover_servers(runtime_dir)
    if killed:
        rep.message(f"stopped {len(killed)} vLLM server(s) left by a dead tuner (process groups {killed})")
    timeout = timeout_s or spec.timeout_s
    deadline = None if timeout is None else time.time() + float(timeout)
    with SigintGuard(runtime_dir, enabled=handle_signals) as guard:
        run = _Run(
            spec, opened, rep, trial_fn, guard, runtime_dir, log_root, grace_s, heartbeat_s, tuple(gpus)
        )
        stopped = "budget" if confirm is not None else _optimize(run, deadline)
        confirm = confirm or spec.confirm
        if confirm is not None and stopped == "budget":
            with storage_errors(opened.url):
                _repair(run)
                queue_repeats(run.study, confirm.top, confirm.repeats)
            stopped = _optimize(run, deadline, repeats=True)
    with storage_errors(opened.url):
        done = opened.handle.study.get_trials(deepcopy=False, states=record.FINISHED_STATES)
    complete = sum(record.repeat_of(t) is None for t in done)
    return StudyOutcome(
        spec.name, opened.url, opened.budget, complete, run.told, stopped, run.repaired, run.repeats
    )


@dataclass
class _Run:
    """One worker's run of a study: what the steps of the loop share."""

    spec: StudySpec
    opened: OpenedStudy
    reporter: Reporter
    trial_fn: TrialFn
    guard: SigintGuard
    runtime_dir: Path
    log_root: Path
    grace_s: float
    heartbeat_s: float
    gpus: tuple[str, ...] = ()  # parallel trials on these GPUs (:mod:`tuner.search.parallel`)
    me: workers.Worker = field(default_factory=workers.this_worker)
    told: int = 0
    repeats: int = 0
    repaired: list[int] = field(default_factory=list)

    @property
    def study(self) -> optuna.Study:
        return self.opened.handle.study

    @property
    def resume_hint(self) -> str:
        return f"continue with: tuner resume {self.spec.source or self.spec.name}"


def _optimize(run: _Run, deadline: float | None, *, repeats: bool = False) -> str:
    """Trials until the budget (or the deadline); returns why it stopped: "budget" or "timeout". With
    ``repeats``: until no repeat is queued ("confirmed")."""
    if run.gpus:
        from tuner.search.parallel import optimize_parallel

        return optimize_parallel(run, deadline, run.gpus, repeats=repeats)
    costs = TrialCosts(run.spec, run.study.sampler)
    while True:
        if run.guard.count:
            raise Interrupted(f"interrupted; {run.resume_hint}")
        with storage_errors(run.opened.url):
            stop = _should_stop(run, deadline, repeats)
            if stop is not None:
                return stop
            costs.before_ask(run.study)
            trial = run.study.ask()
            trial_id = run.opened.handle.trial_id(trial.number)
        with workers.running_here(run.study.study_name, trial.number):
            with storage_errors(run.opened.url):
                if workers.surplus(run.opened.handle, trial, run.spec, run.opened.budget):
                    return "budget"
                run_params = _prepare(run, trial, costs)
            if run_params is None:
                continue
            result = _measure(run, trial, trial_id, run_params)
            with storage_errors(run.opened.url):
                finished = tell(run.opened.handle, run.spec, trial, result, run.reporter)
        run.told += 1
        run.repeats += record.repeat_of(trial) is not None
        run.reporter.trial_finished(trial.number, result.status, finished)


def _should_stop(run: _Run, deadline: float | None, repeats: bool = False) -> str | None:
    """Repair orphans, then: "budget" when finished + running trials of the search (repeats aside) fill
    it (with ``repeats``: "confirmed" when no repeat is queued), "timeout" when one more trial would not fit
    before ``deadline``, else None."""
    _repair(run)
    trials = run.study.get_trials(deepcopy=False)
    if repeats and not waiting_repeats(trials):
        return "confirmed"
    under_way = sum(
        t.state in (*record.FINISHED_STATES, TrialState.RUNNING) and record.repeat_of(t) is None
        for t in trials
    )
    if not repeats and under_way >= run.opened.budget:
        return "budget"
    if deadline is not None and not fits_before(trials, deadline):
        run.reporter.message("timeout: the time left would not fit one more trial")
        return "timeout"
    return None


def _repair(run: _Run) -> None:
    repaired = workers.repair_orphans(run.opened.handle, run.spec, grace_s=run.grace_s, me=run.me)
    if repaired:
        run.reporter.message(f"trial(s) {repaired} had lost their worker: marked interrupted, queued again")
    run.repaired += repaired


def _prepare(run: _Run, trial: optuna.Trial, costs: TrialCosts) -> dict[str, FlagValue] | None:
    """Suggest the params and record who runs the trial; returns the params for the trial function,
    or None when the trial is a queued copy of params that finished meanwhile (then it is FAIL)."""
    attrs = dict(trial.user_attrs)
    is_base = bool(attrs.get(record.ATTR_BASELINE))
    params: dict[str, FlagValue] = {} if is_base else suggest(trial, run.spec)
    if record.ATTR_REQUEUED_FROM in attrs:
        twin = (
            workers.finished_twin(run.study, params, is_base)
            if record.repeat_of(trial) is None
            else workers.finished_copy(run.study, attrs[record.ATTR_REQUEUED_FROM])
        )
        if twin is not None:
            trial.set_user_attr(record.ATTR_DUPLICATE_OF, twin)
            run.study.tell(trial, state=TrialState.FAIL)
            return None
    run_params = dict(params)
    if is_base:
        stored = attrs.get(record.ATTR_BASELINE_FLAGS)
        run_params = dict(stored) if isinstance(stored, dict) else dict(baseline_flags(run.spec) or {})
    trial.set_user_attr(record.ATTR_BASELINE, is_base)
    trial.set_user_attr(record.ATTR_RUN_PARAMS, run_params)
    trial.set_user_attr(record.ATTR_COMPILE_KEY, asdict(costs.record(run_params)))
    workers.claim(trial, run.me)
    return run_params


def _measure(run: _Run, trial: optuna.Trial, trial_id: int, run_params: dict[str, FlagValue]) -> TrialResult:
    """Run the trial function; on interruption or error, give the trial back."""
    run.reporter.trial_started(trial.number, run.opened.budget, dict(run_params))
    log_dir = run.log_root / f"trial-{trial.number:04d}"
    try:
        run.guard.in_trial = True
        if run.guard.count:  # Ctrl-C came while the trial was being set up
            raise KeyboardInterrupt
        with workers.Heartbeat(run.opened.handle.storage, trial_id, run.heartbeat_s):
            result = run.trial_fn(
                run.spec,
                run_params,
                log_dir=log_dir,
                runtime_dir=run.runtime_dir,
                reporter=run.reporter,
                best_so_far=best_capacity(run.study, run.spec),
            )
    except KeyboardInterrupt:
        _give_back(run, trial, {record.ATTR_INTERRUPTED: True})
        raise Interrupted(f"interrupted; trial {trial.number} queued again; {run.resume_hint}") from None
    except GpuBusy as e:  # another process held the trial's GPUs: no verdict on its configuration
        busy = {record.ATTR_STATUS: GPU_BUSY, record.ATTR_FAILURE: GPU_BUSY, record.ATTR_MESSAGE: str(e)}
        _give_back(run, trial, busy)
        raise
    except TrialFailure as e:  # run_trial should return these; accept them anyway
        result = TrialResult(status=e.failure, message=str(e), log_tail=list(e.log_tail), log_path=e.log_path)
    except BaseException as e:
        _give_back(run, trial, {record.ATTR_ERROR: f"{type(e).__name__}: {e}"[:500]})
        raise
    finally:
        run.guard.in_trial = False
    if result.status == INTERRUPTED:
        _give_back(run, trial, {record.ATTR_INTERRUPTED: True})
        raise Interrupted(f"interrupted; {run.resume_hint}")
    return result


def _give_back(run: _Run, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    with storage_errors(run.opened.url):
        workers.give_back(run.opened.handle, trial, run.spec, attrs)


__all__ = ["StudyOutcome", "TrialFn", "run_study"]
