"""Who runs a trial, and whether it still runs: worker records, heartbeats, orphan repair, requeue.

* **Worker** — every trial a loop runs stores user attr ``worker`` (host, pid, pid start time, boot id) and
  ``heartbeat_at``, which a thread renews every :func:`heartbeat_interval_s` while the trial runs. The host
  is ``$TUNER_WORKER_HOST`` (:data:`HOST_ENV`) when set, else the hostname; the boot id recorded under
  another identity than the hostname is prefixed with it, so two identities on one machine are two hosts
  (judged by heartbeat, never by pid).
* **Dead** — a RUNNING trial's worker is dead when: same host and boot, and the pid is gone or now runs
  another process (its start time differs); same host, another boot id; another host (or no worker
  record), no heartbeat for ``grace_s`` (:func:`heartbeat_grace_s`: ``$TUNER_HEARTBEAT_GRACE_S``, else
  :data:`GRACE_S`). A trial of this very process is alive only while one of its loops runs it
  (:func:`running_here`).
* **Resume** — :func:`repair_orphans` marks every RUNNING trial of a dead worker FAIL with user attr
  ``interrupted`` and queues its params again (:func:`requeue`: ``enqueue_trial``), unless a finished or
  queued trial already has them; a repeat of ``tuner confirm`` is queued again as a repeat (``repeat_of``). The state change is atomic, so with several workers only the one that made
  it re-queues.
* **Many workers** — any number of processes may run the same study on one database: storage calls are
  atomic (see :mod:`tuner.search.storage`), so trial numbers are unique and no queued trial runs twice.
* **Taken for dead** — a worker whose trial was repaired by another (no heartbeat within the grace) keeps
  its result as a trial of its own (user attr ``copy_of``, :func:`store_copy`); the queued copy then finds
  it finished and is not run again (``duplicate_of``).

Optuna's own heartbeat (``RDBStorage(heartbeat_interval=...)``, ``fail_stale_trials``) is not used, as it
would change behaviour: its beats are readable only through private members (so ``tuner status`` could not
judge a trial without writing), its grace is one for every host (a dead worker of this host would wait it
out instead of being found by its pid at once) and its interval is whole seconds; :class:`Heartbeat` has the
shape of Optuna's heartbeat thread and :func:`requeue` that of its stale-trial callback.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from tuner.config.spec import StudySpec
from tuner.errors import UsageError
from tuner.search.record import (
    ATTR_BASELINE,
    ATTR_BASELINE_FLAGS,
    ATTR_COPY_OF,
    ATTR_HEARTBEAT,
    ATTR_INTERRUPTED,
    ATTR_REPEAT_OF,
    ATTR_REQUEUED_FROM,
    ATTR_SURPLUS,
    ATTR_WORKER,
    FINISHED_STATES,
    repeat_of,
)
from tuner.search.study import StudyHandle
from tuner.server.procs import pid_alive, process_starttime

#: seconds between two heartbeats of a running trial (at most; see :func:`heartbeat_interval_s`)
HEARTBEAT_S = 30.0
#: a trial of another host (or without a worker record) is dead after this long without a heartbeat
GRACE_S = 600.0
#: environment variables: this worker's host identity; the heartbeat grace in seconds
HOST_ENV = "TUNER_WORKER_HOST"
GRACE_ENV = "TUNER_HEARTBEAT_GRACE_S"
#: Optuna's system attribute holding a queued trial's params
_FIXED_PARAMS = "fixed_params"

#: numbers of the trials the loops of this process run now, by study name
_RUNNING: dict[str, set[int]] = {}


@dataclass(frozen=True)
class Worker:
    """Who runs a trial: enough to tell later whether that process is still alive."""

    host: str
    pid: int
    pid_start: int | None  # clock ticks since boot (Linux), tells a recycled pid apart
    boot_id: str | None
    gpus: tuple[str, ...] | None = None  # the GPU set of a parallel trial (``tuner run --gpus``)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "pid": self.pid,
            "pid_start": self.pid_start,
            "boot_id": self.boot_id,
        }
        if self.gpus is not None:
            out["gpus"] = list(self.gpus)
        return out


def this_worker(environ: Mapping[str, str] | None = None) -> Worker:
    """The current process as a :class:`Worker`. Host: ``$TUNER_WORKER_HOST`` of ``environ`` (default
    ``os.environ``) when set and not blank, else the hostname. When it names another host than the hostname,
    the boot id is ``HOST/BOOT_ID``: never the boot id of a worker under another identity."""
    env = os.environ if environ is None else environ
    hostname = socket.gethostname()
    host = env.get(HOST_ENV, "").strip() or hostname
    boot = _boot_id()
    if host != hostname and boot is not None:
        boot = f"{host}/{boot}"
    return Worker(host, os.getpid(), process_starttime(os.getpid()), boot)


def heartbeat_grace_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds without a heartbeat after which another host's trial is dead: ``$TUNER_HEARTBEAT_GRACE_S`` of
    ``environ`` (default ``os.environ``) when set and not blank, else :data:`GRACE_S`. Raises
    :class:`~tuner.errors.UsageError` for a value that is not a positive finite number."""
    env = os.environ if environ is None else environ
    raw = env.get(GRACE_ENV, "").strip()
    if not raw:
        return GRACE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{GRACE_ENV}={raw!r}: expected a positive number of seconds (default {GRACE_S:g})")
    return value


def heartbeat_interval_s(grace_s: float) -> float:
    """Seconds between two heartbeats for workers judged with ``grace_s``: :data:`HEARTBEAT_S`, or a quarter
    of a shorter grace (a live trial then never goes a grace without a beat)."""
    return min(HEARTBEAT_S, grace_s / 4)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def claim(trial: optuna.Trial, me: Worker) -> None:
    """Record that ``me`` runs ``trial``, with its first heartbeat."""
    trial.set_user_attr(ATTR_WORKER, me.to_dict())
    trial.set_user_attr(ATTR_HEARTBEAT, time.time())


@contextlib.contextmanager
def running_here(study_name: str, number: int) -> Iterator[None]:
    """While the block runs, trial ``number`` of the study is run by this process (not an orphan)."""
    mine = _RUNNING.setdefault(study_name, set())
    mine.add(number)
    try:
        yield
    finally:
        mine.discard(number)


def trial_is_orphan(
    trial: FrozenTrial,
    *,
    now: float,
    grace_s: float | None = None,
    me: Worker | None = None,
    running: Collection[int] = (),
) -> bool:
    """True when ``trial`` is RUNNING but the process running it is dead (see the module docstring).
    ``running``: the numbers of the trials of its study that this process runs now. ``grace_s`` and ``me``
    default to :func:`heartbeat_grace_s` and :func:`this_worker`."""
    if trial.state != TrialState.RUNNING:
        return False
    me = me or this_worker()
    grace_s = heartbeat_grace_s() if grace_s is None else grace_s
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
        return trial.number not in running
    if not pid_alive(pid):
        return True
    recorded = info.get("pid_start")
    return isinstance(recorded, int) and process_starttime(pid) not in (None, recorded)


def repair_orphans(
    handle: StudyHandle, spec: StudySpec, *, grace_s: float | None = None, me: Worker | None = None
) -> list[int]:
    """Mark every RUNNING trial of a dead worker FAIL (``interrupted``) and queue its params again.
    Returns the numbers of the trials repaired by this call (see the module docstring; defaults as
    :func:`trial_is_orphan`)."""
    now = time.time()
    me = me or this_worker()
    grace_s = heartbeat_grace_s() if grace_s is None else grace_s
    running = _RUNNING.get(handle.study.study_name, set())
    repaired: list[int] = []
    for t in handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not trial_is_orphan(t, now=now, grace_s=grace_s, me=me, running=running):
            continue
        trial_id = handle.trial_id(t.number)
        try:
            handle.storage.set_trial_user_attr(trial_id, ATTR_INTERRUPTED, True)
            if not handle.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue
        repaired.append(t.number)
        requeue(handle.study, handle.storage.get_trial(trial_id), spec)
    return repaired


def give_back(handle: StudyHandle, trial: optuna.Trial, spec: StudySpec, attrs: Mapping[str, Any]) -> None:
    """Mark this worker's own trial FAIL with ``attrs`` (not a verdict on its configuration) and queue its
    params again; nothing when another worker took it for dead meanwhile (it queued them)."""
    try:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        handle.study.tell(trial, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return
    requeue(handle.study, handle.frozen(trial.number), spec)


def requeue(study: optuna.Study, trial: FrozenTrial, spec: StudySpec) -> bool:
    """Queue ``trial``'s params again, unless a finished or queued trial has them, or they are incomplete
    (interrupted while being suggested). A repeat (``repeat_of``) is queued again as a repeat of the same
    trial whatever else has its params: repeating them is its point. Returns whether it queued."""
    is_base = bool(trial.user_attrs.get(ATTR_BASELINE))
    params: dict[str, Any] = (
        {} if is_base else dict(trial.params or trial.system_attrs.get(_FIXED_PARAMS) or {})
    )
    if not is_base and set(params) != set(spec.search):
        return False
    repeats = repeat_of(trial)
    if repeats is None and not _unqueued(study, params, is_base):
        return False
    attrs: dict[str, Any] = {ATTR_BASELINE: is_base, ATTR_REQUEUED_FROM: trial.number}
    if repeats is not None:
        attrs[ATTR_REPEAT_OF] = repeats
    if is_base and ATTR_BASELINE_FLAGS in trial.user_attrs:
        attrs[ATTR_BASELINE_FLAGS] = trial.user_attrs[ATTR_BASELINE_FLAGS]
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return True


def _unqueued(study: optuna.Study, params: Mapping[str, Any], is_base: bool) -> bool:
    """No finished trial and no queued trial (repeats aside) has these params."""
    if finished_twin(study, params, is_base) is not None:
        return False
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if (
            bool(t.user_attrs.get(ATTR_BASELINE)) == is_base
            and repeat_of(t) is None
            and t.system_attrs.get(_FIXED_PARAMS, {}) == params
        ):
            return False
    return True


def finished_twin(study: optuna.Study, params: Mapping[str, Any], is_base: bool) -> int | None:
    """The number of a finished trial (COMPLETE or PRUNED) with the same params (and baseline-ness), or None."""
    for t in study.get_trials(deepcopy=False, states=FINISHED_STATES):
        if bool(t.user_attrs.get(ATTR_BASELINE)) == is_base and t.params == dict(params):
            return t.number
    return None


def finished_copy(study: optuna.Study, requeued_from: int) -> int | None:
    """The number of a finished trial that stores the result of trial ``requeued_from`` (``copy_of``: it was
    taken for dead but finished), or None. How a queued repeat finds it need not run again."""
    for t in study.get_trials(deepcopy=False, states=FINISHED_STATES):
        if t.user_attrs.get(ATTR_COPY_OF) == requeued_from:
            return t.number
    return None


def store_copy(
    handle: StudyHandle,
    trial: optuna.Trial,
    state: TrialState,
    values: Sequence[float] | None,
    attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any],
) -> None:
    """Store the result of ``trial``, taken for dead by another worker, as a finished trial of its own
    (``state`` and ``values`` as :func:`tuner.search.tell.tell` would tell them; the record's user
    attributes and constraint system attributes; user attr ``copy_of``)."""
    frozen = handle.frozen(trial.number)
    copy = optuna.trial.create_trial(
        state=state,
        params=dict(frozen.params),
        distributions=dict(frozen.distributions),
        values=None if values is None else list(values),
        user_attrs={**frozen.user_attrs, **attrs, ATTR_COPY_OF: trial.number},
        system_attrs=dict(system_attrs),
    )
    handle.study.add_trial(copy)


class Heartbeat:
    """While a trial runs, a thread stores ``heartbeat_at`` every ``interval_s`` (for other hosts' resume)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval_s: float) -> None:
        self._db = storage
        self._id = trial_id
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
                self._db.set_trial_user_attr(self._id, ATTR_HEARTBEAT, time.time())
            except UpdateFinishedTrialError:
                return  # finished, or taken for dead by another worker
            except Exception:  # a missed beat is harmless: the grace period is many beats long
                continue


def running_workers(trials: Sequence[FrozenTrial], *, now: float) -> list[dict[str, Any]]:
    """Who runs the study now: per RUNNING trial, its worker's ``host``, ``pid``, ``gpus`` (None when it runs
    one trial at a time), the ``trial`` number and ``heartbeat_age_s`` (None without a heartbeat); by host,
    pid and trial. What ``tuner status`` shows per worker."""
    out: list[dict[str, Any]] = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        info = t.user_attrs.get(ATTR_WORKER)
        info = info if isinstance(info, dict) else {}
        beat = t.user_attrs.get(ATTR_HEARTBEAT)
        gpus = info.get("gpus")
        out.append(
            {
                "host": str(info.get("host") or "?"),
                "pid": info.get("pid") if isinstance(info.get("pid"), int) else None,
                "gpus": [str(g) for g in gpus] if isinstance(gpus, list) else None,
                "trial": t.number,
                "heartbeat_age_s": max(0.0, now - float(beat)) if isinstance(beat, int | float) else None,
            }
        )
    return sorted(out, key=lambda w: (w["host"], w["pid"] or 0, w["trial"]))


def surplus(handle: StudyHandle, trial: optuna.Trial, spec: StudySpec, budget: int) -> bool:
    """True (and the trial given back) when trials of the search numbered before it already fill the
    budget (two workers asked at once); a repeat is never surplus."""
    if repeat_of(trial) is not None:
        return False
    trials = handle.study.get_trials(deepcopy=False, states=(*FINISHED_STATES, TrialState.RUNNING))
    ahead = sum(t.number < trial.number and repeat_of(t) is None for t in trials)
    if ahead < budget:
        return False
    give_back(handle, trial, spec, {ATTR_SURPLUS: True})
    return True
