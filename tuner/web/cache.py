"""The dashboard's one reader of the storage: a cache shared by every page, refreshed once per interval.

Contract:

* :class:`Snapshots` answers :meth:`~Snapshots.names` (the studies) and :meth:`~Snapshots.study` (one
  study's :class:`StudyData`) from memory. A study's data older than ``interval_s`` is read again in a
  worker thread, in the background, one read at a time (one lock), while pages keep getting the data held;
  only a study never read yet makes its request wait. So the storage is read at most once per interval per
  study (and once for the list of studies) however many pages are open; :attr:`Snapshots.refreshes` counts
  the reads of studies.
* Each study is held as one long-lived Optuna study object over the storage, whose trial cache re-reads
  only new and unfinished trials (finished trials never change), so a refresh of a 1,000-trial study is one
  short query. What is derived from the trials (the status row, the Pareto front, the step view and its
  picture) is computed again only when a trial was added, changed state or stored its status
  (:func:`revision`); the records, heartbeats and liveness of running trials on every refresh.
* Everything is read through :mod:`tuner.search.record` and computed by :mod:`tuner.report`; nothing is
  written. A study that is not in the storage is ``None``; a storage that fails is
  :class:`~tuner.errors.StorageError` (one line).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError
from tuner.report.envelope import StepView
from tuner.report.plot import Picture, picture
from tuner.search.record import StudyRecord, TrialRecord, read, read_study
from tuner.search.storage import storage_errors

#: seconds between two reads of the storage (the default of ``tuner dashboard --interval``)
DEFAULT_INTERVAL_S = 2.0


@dataclass(frozen=True)
class StudyData:
    """One study as the pages see it, read at ``read_at`` (epoch seconds)."""

    name: str
    study: StudyRecord
    trials: tuple[FrozenTrial, ...]  # by number
    records: tuple[TrialRecord, ...]  # read(t) of each, same order
    heartbeats: Mapping[int, float]  # RUNNING trial -> its last heartbeat (epoch s), where stored
    alive: frozenset[int]  # RUNNING trials whose worker lives (tuner.search.workers.trial_is_orphan)
    status: Mapping[str, Any]  # tuner.report.status.study_status
    front: tuple[Mapping[str, Any], ...]  # tuner.report.pareto.pareto_rows
    view: StepView  # tuner.report.pareto.step_view
    picture: Picture  # tuner.report.plot.picture of the view
    metric_names: tuple[str, ...]
    maximize: tuple[bool, ...]
    revision: str
    read_at: float

    def trial(self, number: int) -> tuple[FrozenTrial, TrialRecord] | None:
        """Trial ``number`` and its record, or None."""
        if 0 <= number < len(self.trials) and self.trials[number].number == number:
            return self.trials[number], self.records[number]
        for t, r in zip(self.trials, self.records, strict=True):
            if t.number == number:
                return t, r
        return None


def revision(trials: Sequence[FrozenTrial], records: Sequence[TrialRecord]) -> str:
    """Changes when a trial is added, changes state or stores its status (heartbeats aside)."""
    parts = [f"{t.number}:{t.state.name}:{r.status or ''}" for t, r in zip(trials, records, strict=True)]
    return f"{len(parts)}-{hash('|'.join(parts)) & 0xFFFFFFFF:08x}"


def load(study: optuna.Study, previous: StudyData | None, now: float) -> StudyData:
    """Read ``study`` (blocking) into :class:`StudyData`; derived parts are kept from ``previous`` when its
    :func:`revision` is the same."""
    from tuner.report.pareto import metric_names, pareto_rows, step_view
    from tuner.report.status import study_status
    from tuner.search.workers import trial_is_orphan

    trials = tuple(study.get_trials(deepcopy=False))
    records = tuple(read(t) for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    beats = {
        r.number: r.heartbeat_at
        for r in records
        if r.state == TrialState.RUNNING and r.heartbeat_at is not None
    }
    alive = frozenset(t.number for t in running if not trial_is_orphan(t, now=now))
    rev = revision(trials, records)
    if previous is not None and previous.revision == rev:
        return replace(previous, trials=trials, records=records, heartbeats=beats, alive=alive, read_at=now)
    view = step_view(study)
    names = tuple(metric_names(study))
    return StudyData(
        name=study.study_name,
        study=read_study(study),
        trials=trials,
        records=records,
        heartbeats=beats,
        alive=alive,
        status=study_status(study),
        front=tuple(pareto_rows(study)),
        view=view,
        picture=picture(
            view, f"{study.study_name}: latency against output throughput, every measured step", labels=False
        ),
        metric_names=names,
        maximize=tuple(d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions),
        revision=rev,
        read_at=now,
    )


class Snapshots:
    """The shared cache (see the module docstring). ``clock``: monotonic seconds (tests script it)."""

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        *,
        url: str = "",
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.url = url
        self.interval_s = interval_s
        self.refreshes = 0
        self._clock = clock
        self._lock = asyncio.Lock()
        self._names: tuple[float, list[str]] | None = None
        self._studies: dict[str, optuna.Study] = {}
        self._data: dict[str, tuple[float, StudyData]] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        #: the last background read's failure (one line), None once a read succeeds
        self.failure: str | None = None

    async def names(self) -> list[str]:
        """The names of the studies in the storage, sorted."""
        async with self._lock:
            if self._names is None or self._clock() - self._names[0] >= self.interval_s:
                found = await asyncio.to_thread(self._read_names)
                self._names = (self._clock(), found)
            return list(self._names[1])

    async def study(self, name: str) -> StudyData | None:
        """``name``'s data; None when there is no such study. The first answer waits for the read; later
        ones are served from memory at once, and one older than ``interval_s`` starts a read in the
        background (one at a time) whose result the next answer gives."""
        held = self._data.get(name)
        if held is None:
            await self._refresh(name)
            held = self._data.get(name)
            return held[1] if held else None
        if self._clock() - held[0] >= self.interval_s and name not in self._pending:
            self._pending[name] = asyncio.create_task(self._background(name))
            self._pending[name].add_done_callback(lambda _t: self._pending.pop(name, None))
        return held[1]

    async def settled(self) -> None:
        """Wait for the reads running in the background."""
        while self._pending:
            await asyncio.gather(*list(self._pending.values()), return_exceptions=True)

    async def warm(self) -> None:
        """Read every study once (the dashboard does it when it starts, so the first page is fast)."""
        for name in await self.names():
            await self.study(name)

    async def _background(self, name: str) -> None:
        try:
            await self._refresh(name)
        except TunerError as e:  # pages keep the data held and say the storage failed
            self.failure = str(e)
        else:
            self.failure = None

    async def _refresh(self, name: str) -> None:
        async with self._lock:
            held = self._data.get(name)
            if held is not None and self._clock() - held[0] < self.interval_s:
                return  # read meanwhile by another request
            data = await asyncio.to_thread(self._read_study, name, held[1] if held else None)
            if data is None:
                self._data.pop(name, None)
            else:
                self._data[name] = (self._clock(), data)

    def _read_names(self) -> list[str]:
        with storage_errors(self.url):
            return sorted(s.study_name for s in self.storage.get_all_studies())

    def _read_study(self, name: str, previous: StudyData | None) -> StudyData | None:
        self.refreshes += 1
        with storage_errors(self.url):
            study = self._studies.get(name)
            if study is None:
                try:
                    study = optuna.load_study(study_name=name, storage=self.storage)
                except KeyError:
                    return None
                self._studies[name] = study
            return load(study, previous, time.time())
