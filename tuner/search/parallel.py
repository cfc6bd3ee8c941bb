"""Parallel trials on one host (``tuner run --gpus``): one parent process, N trials at once, each on its own GPUs.

Contract of :func:`optimize_parallel` (what :func:`tuner.search.loop.run_study` runs when given GPUs; the
budget, orphan repair, suggest, measure and tell are the serial loop's own steps, one trial at a time):

* **Asking** — the sampler is asked only when a GPU is free and no trial waits for GPUs. The asked trial's
  params are suggested and its size (:func:`tuner.search.slots.trial_size`) checked against the rules known
  before launch (:func:`tuner.search.slots.size_rule`: a refused trial is told ``infeasible`` with the
  reason, no server started); then it waits, first come first served, until
  :class:`~tuner.search.slots.Placement` gives it GPUs (its heartbeat runs while it waits). TPE's constant
  liar (tuner's default sampler) counts the running trials as bad so far, so proposals made while others
  run stay apart.
* **A slot** — a thread runs the trial function on a copy of the study spec whose ``server.env`` carries
  ``CUDA_VISIBLE_DEVICES`` = its GPUs (the memory check and the GPU telemetry read it there); the port, the
  pidfile and the log folder are per trial already (a free port, ``vllm-<pid>.json``, ``trial-NNNN/``).
  The trial's worker record names its GPUs (``tuner status``). Progress goes through one lock to the one
  reporter, each phase labelled with its trial and GPUs.
* **Faults stay contained** — a crash, OOM or hang is that trial's result, told like any failure; an
  unexpected error in a slot gives its trial back (FAIL, queued again), is reported, and the others go on.
* **A GPU another process fills** — the trial waits before its start (:mod:`tuner.measure.gpufree`); when
  the memory is not freed in time its trial is given back (FAIL, failure ``gpu_busy``, queued again: no
  verdict on its configuration), the parent says so in one line and sets the blocked GPUs aside for
  ``resources.gpu_wait_s`` (:meth:`~tuner.search.slots.Placement.take`), so the next trials run elsewhere.
* **Ctrl-C** — the parent owns it: the first one stops asking, cancels every slot's load or wait
  (:func:`tuner.load.cancel.cancel_running_load`) and sends SIGTERM to every server this process started
  (:func:`tuner.server.procs.signal_own_servers`), both repeated until every slot has returned, gives
  each running or waiting trial back (FAIL ``interrupted``, queued again) and raises
  :class:`~tuner.errors.Interrupted`; the second kills them all and exits at once
  (:mod:`tuner.search.signals`). After kill -9 of the parent, ``tuner resume`` stops every slot's server
  (the pidfile sweep) and repairs every trial left RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from tuner.config.spec import DEFAULT_GPU_WAIT_S, FlagValue, StudySpec
from tuner.errors import Interrupted
from tuner.load.cancel import cancel_running_load
from tuner.measure.gpufree import GpuBusy
from tuner.measure.result import TrialResult
from tuner.progress import FinishedTrial, Reporter
from tuner.search import record, workers
from tuner.search.signals import SigintGuard
from tuner.search.slots import Placement, size_rule, trial_size
from tuner.search.storage import storage_errors
from tuner.search.tell import tell
from tuner.search.trial_cost import TrialCosts
from tuner.server.env import gpu_env
from tuner.server.failures import GPU_BUSY, INFEASIBLE
from tuner.server.procs import signal_own_servers

if TYPE_CHECKING:
    from tuner.search.loop import _Run

#: seconds the parent sleeps between looks at its slots when nothing happens
POLL_S = 0.2


def model_shape(model: str) -> tuple[int | None, int | None]:
    """(attention heads, hidden layers) from the model folder's ``config.json``; None where unknown (a hub
    name, no file, a missing key)."""
    try:
        cfg = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(cfg, dict):
        return None, None
    inner = cfg.get("text_config")
    text: dict[str, object] = inner if isinstance(inner, dict) else cfg
    heads, layers = text.get("num_attention_heads"), text.get("num_hidden_layers")
    return (heads if isinstance(heads, int) else None, layers if isinstance(layers, int) else None)


def on_gpus(spec: StudySpec, gpus: tuple[str, ...]) -> StudySpec:
    """``spec`` with its server confined to ``gpus`` (``CUDA_VISIBLE_DEVICES`` in ``server.env``)."""
    server = spec.server.model_copy(update={"env": {**spec.server.env, **gpu_env(gpus)}})
    return spec.model_copy(update={"server": server})


class _SlotReporter:
    """One slot's view of the parent's reporter: calls serialised by one lock, phases labelled."""

    def __init__(self, inner: Reporter, lock: threading.Lock, gpus: tuple[str, ...]) -> None:
        self._inner, self._lock, self._gpus = inner, lock, ",".join(gpus)
        self._label = ""

    def trial_started(self, number: int, total: int | None, params: dict[str, object]) -> None:
        self._label = f"trial {number} on GPU {self._gpus}"
        with self._lock:
            self._inner.trial_started(number, total, {**params, "GPUs": self._gpus})

    def phase(self, name: str, detail: str = "") -> None:
        with self._lock:
            self._inner.phase(name, self._label + (f": {detail}" if detail else ""))

    def trial_finished(self, number: int, status: str, finished: FinishedTrial) -> None:
        with self._lock:
            self._inner.trial_finished(number, status, finished)

    def message(self, text: str) -> None:
        with self._lock:
            self._inner.message(text)


@dataclass
class _Waiting:
    """An asked, suggested trial waiting for GPUs."""

    trial: optuna.Trial
    trial_id: int
    params: dict[str, FlagValue]
    size: int
    hold: contextlib.ExitStack  # running_here + its heartbeat, closed when the trial is done


@dataclass
class _Slot:
    gpus: tuple[str, ...]
    thread: threading.Thread
    error: BaseException | None = None
    busy: GpuBusy | None = None  # its GPUs stayed full: the trial was given back


def blocked_gpus(gpus: tuple[str, ...], busy: GpuBusy) -> tuple[str, ...]:
    """The GPUs of a slot that ``busy`` found full: those named by NVML index; all of them when the names
    are UUIDs (NVML's index cannot be matched to them)."""
    indices = {b.gpu.index for b in busy.verdict.blocked}
    return tuple(g for g in gpus if g.isdigit() and int(g) in indices) or gpus


@dataclass
class _Parallel:
    run: _Run
    placement: Placement
    shape: tuple[int | None, int | None]
    costs: TrialCosts
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: queue.Queue[int] = field(default_factory=queue.Queue)
    slots: dict[int, _Slot] = field(default_factory=dict)
    waiting: _Waiting | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    finished: list[bool] = field(default_factory=list)  # per trial told by a slot: was it a repeat
    aside: list[tuple[tuple[str, ...], float]] = field(default_factory=list)  # full GPUs, until (monotonic)

    # ------------------------------------------------------------------------------ the parent's steps

    def next_trial(self, deadline: float | None, repeats: bool) -> str | None:
        """Ask for one trial and make it wait for GPUs (or refuse it); the reason to stop, or None."""
        from tuner.search.loop import _prepare, _should_stop

        run = self.run
        with storage_errors(run.opened.url):
            stop = _should_stop(run, deadline, repeats)
            if stop is not None:
                return stop
            self.costs.before_ask(run.study)
            trial = run.study.ask()
            trial_id = run.opened.handle.trial_id(trial.number)
        hold = contextlib.ExitStack()
        hold.enter_context(workers.running_here(run.study.study_name, trial.number))
        try:
            with storage_errors(run.opened.url):
                if workers.surplus(run.opened.handle, trial, run.spec, run.opened.budget):
                    hold.close()
                    return "budget"
                params = _prepare(run, trial, self.costs)
                if params is None:
                    hold.close()
                    return None
                flags = {**run.spec.server.args, **params}
                heads, layers = self.shape
                reason = size_rule(flags, len(self.placement.gpus), heads=heads, layers=layers)
                if reason is not None:
                    self._refuse(trial, params, reason)
                    hold.close()
                    return None
            hold.enter_context(workers.Heartbeat(run.opened.handle.storage, trial_id, run.heartbeat_s))
            self.waiting = _Waiting(trial, trial_id, params, trial_size(flags), hold)
        except BaseException:
            hold.close()
            raise
        return None

    def _refuse(self, trial: optuna.Trial, params: dict[str, FlagValue], reason: str) -> None:
        run = self.run
        run.reporter.trial_started(trial.number, run.opened.budget, dict(params))
        result = TrialResult(status=INFEASIBLE, message=reason, flags={**run.spec.server.args, **params})
        finished = tell(run.opened.handle, run.spec, trial, result, run.reporter)
        run.told += 1
        run.reporter.trial_finished(trial.number, INFEASIBLE, finished)

    def launch(self) -> bool:
        """Start the waiting trial when GPUs are free for it; whether it started."""
        w = self.waiting
        gpus = None if w is None else self.placement.place(w.size)
        if w is None or gpus is None:
            return False
        self.waiting = None
        run = self.run
        with storage_errors(run.opened.url):
            workers.claim(w.trial, replace(run.me, gpus=gpus))
        slot_run = replace(
            run,
            spec=on_gpus(run.spec, gpus),
            guard=SigintGuard(run.runtime_dir, enabled=False),
            reporter=_SlotReporter(run.reporter, self.lock, gpus),
        )
        name = f"tuner-trial-{w.trial.number}"
        thread = threading.Thread(target=self._slot, args=(slot_run, w), name=name, daemon=True)
        self.slots[w.trial.number] = _Slot(gpus, thread)
        thread.start()
        return True

    def wait(self, timeout: float) -> bool:
        """Take in the slots that ended (waiting up to ``timeout`` for one); whether any did."""
        ended: list[int] = []
        with contextlib.suppress(queue.Empty):
            ended.append(self.done.get(timeout=timeout))
            while True:
                ended.append(self.done.get_nowait())
        for number in ended:
            slot = self.slots.pop(number)
            slot.thread.join()
            self.placement.release(slot.gpus)
            if slot.error is not None:
                err = f"{type(slot.error).__name__}: {slot.error}"
                self.run.reporter.message(f"trial {number} stopped by an error ({err}); queued again")
            if slot.busy is not None:
                self._set_aside(number, blocked_gpus(slot.gpus, slot.busy), slot.busy)
        return bool(ended)

    def _set_aside(self, number: int, gpus: tuple[str, ...], busy: GpuBusy) -> None:
        """Keep ``gpus`` (full of another process's memory) from the next trials for ``resources.gpu_wait_s``."""
        wait_s = float((self.run.spec.resources or {}).get("gpu_wait_s", DEFAULT_GPU_WAIT_S))
        if self.placement.take(gpus):
            self.aside.append((gpus, time.monotonic() + wait_s))
        self.run.reporter.message(
            f"trial {number} given back ({GPU_BUSY}): {busy}; queued again; "
            f"GPU {','.join(gpus)} set aside for {wait_s:.0f} s"
        )

    def restore(self) -> bool:
        """Give the GPUs set aside whose time is up back to placement; whether any came back."""
        now = time.monotonic()
        due = [a for a in self.aside if a[1] <= now]
        for gpus, _until in due:
            self.aside.remove((gpus, _until))
            self.placement.release(gpus)
        return bool(due)

    def interrupt(self) -> None:
        """Ctrl-C: give every trial back, stop every server, wait for the slots; raises Interrupted."""
        run = self.run
        self.stopping.set()
        numbers = sorted(self.slots)
        if self.waiting is not None:
            w, self.waiting = self.waiting, None
            numbers.append(w.trial.number)
            with storage_errors(run.opened.url):
                workers.give_back(run.opened.handle, w.trial, run.spec, {record.ATTR_INTERRUPTED: True})
            w.hold.close()
        while self.slots:
            cancel_running_load()  # every slot's load or GPU wait; each slot then gives its trial back
            signal_own_servers(run.runtime_dir)
            self.wait(0.5)
        raise Interrupted(f"interrupted; trial(s) {sorted(numbers)} queued again; {run.resume_hint}")

    # ------------------------------------------------------------------------------ a slot's thread

    def _slot(self, slot_run: _Run, w: _Waiting) -> None:
        from tuner.search.loop import _give_back, _measure

        number = w.trial.number
        try:
            try:
                result = _measure(slot_run, w.trial, w.trial_id, w.params)
            except Interrupted:
                return  # given back by _measure
            except GpuBusy as e:  # given back by _measure; the parent sets the full GPUs aside
                self.slots[number].busy = e
                return
            if self.stopping.is_set():  # its server was stopped by Ctrl-C: no verdict on the config
                _give_back(slot_run, w.trial, {record.ATTR_INTERRUPTED: True})
                return
            with storage_errors(slot_run.opened.url):
                finished = tell(slot_run.opened.handle, self.run.spec, w.trial, result, slot_run.reporter)
            self.finished.append(record.repeat_of(w.trial) is not None)
            slot_run.reporter.trial_finished(number, result.status, finished)
        except BaseException as e:  # contained: reported by the parent, the other slots go on
            self.slots[number].error = e
        finally:
            w.hold.close()
            self.done.put(number)


def optimize_parallel(
    run: _Run, deadline: float | None, gpus: tuple[str, ...], *, repeats: bool = False
) -> str:
    """Trials on ``gpus`` in parallel until the budget (or the deadline; with ``repeats`` until no repeat
    is queued); returns why it stopped, as the serial loop does. See the module docstring."""
    p = _Parallel(run, Placement(gpus), model_shape(run.spec.model), TrialCosts(run.spec, run.study.sampler))
    stopped: str | None = None
    look = True  # whether to ask again: at the start and after each trial asked or ended
    try:
        while True:
            if run.guard.count:
                p.interrupt()
            look = p.restore() or look
            if p.waiting is not None and p.launch():
                look = True
            if p.waiting is None and look and p.placement.free:
                stopped = p.next_trial(deadline, repeats)
                look = stopped is None
                continue
            if stopped is not None and not p.slots and p.waiting is None:
                return stopped
            look = p.wait(POLL_S) or look
    finally:
        run.told += len(p.finished)
        run.repeats += sum(p.finished)


__all__ = ["blocked_gpus", "model_shape", "on_gpus", "optimize_parallel"]
