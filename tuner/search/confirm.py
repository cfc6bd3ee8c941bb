"""Confirmed winners: which configurations ``tuner confirm`` re-measures, and the repeats it queues.

Contract:

* **Leaders** (:func:`leaders`) — the ``top`` best original trials by the first objective, as told (a repeat
  is never a leader): COMPLETE, measured (not failed), feasible, one per distinct configuration (baseline-ness
  and run params; the better-scored trial of a configuration measured twice by the search), ties to the
  lower number. Ranked by the original's score, not by a mean, so that the same ``confirm`` run twice queues
  nothing the second time. **The baseline is always a leader** when it is measured and feasible: every
  report states the winner's gain against it, and a gain is real only beyond the noise of both.
* **Repeats** (:func:`plan`) — each leader is measured ``1 + repeats`` times in all: its own trial plus
  repeats, each a trial of the same study with the same params (the baseline: its ``baseline_flags``), user
  attr ``repeat_of`` naming the leader. The repeats a leader already has — finished (failed ones, PRUNED,
  included: they are measurements), RUNNING or queued — count, so a leader confirmed enough is not re-run.
  A repeat interrupted (FAIL) does not count: :func:`tuner.search.workers.requeue` queues it again with its
  ``repeat_of``.
* **Queued** (:func:`queue_repeats`) — as WAITING trials of the study; the study loop runs them like any
  trial (fresh server start, ``trial-NNNN`` log folder, the same record), and never counts them toward the
  budget (:func:`tuner.search.loop.run_study`). Two workers planning at the same moment may queue a repeat
  each: an extra measurement, never a lost one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.search.record import (
    ATTR_BASELINE,
    ATTR_BASELINE_FLAGS,
    ATTR_REPEAT_OF,
    FINISHED_STATES,
    TrialRecord,
    read,
    repeat_of,
)

_LIVE = (*FINISHED_STATES, TrialState.RUNNING, TrialState.WAITING)


def leaders(records: Iterable[TrialRecord], maximize: bool, top: int) -> list[TrialRecord]:
    """The trials to confirm, best first, the baseline last when it is not among the ``top`` (see the
    module docstring)."""
    sign = -1.0 if maximize else 1.0
    scored = sorted(
        (
            r
            for r in records
            if r.state == TrialState.COMPLETE
            and r.values
            and r.repeat_of is None
            and not r.failed
            and r.feasible is not False
        ),
        key=lambda r: (sign * r.values[0] if r.values else 0.0, r.number),
    )
    seen: set[tuple[bool, str]] = set()
    distinct: list[TrialRecord] = []
    for r in scored:
        key = (r.is_baseline, repr(sorted(r.run_params.items())))
        if key not in seen:
            seen.add(key)
            distinct.append(r)
    chosen = distinct[:top]
    base = next((r for r in distinct[top:] if r.is_baseline), None)
    return chosen + ([base] if base is not None else [])


def plan(records: Sequence[TrialRecord], maximize: bool, top: int, repeats: int) -> dict[int, int]:
    """For each leader (by number, best first), how many more repeats to queue (0 for one confirmed
    enough)."""
    have: dict[int, int] = {}
    for r in records:
        if r.repeat_of is not None and r.state in _LIVE:
            have[r.repeat_of] = have.get(r.repeat_of, 0) + 1
    return {r.number: max(repeats - have.get(r.number, 0), 0) for r in leaders(records, maximize, top)}


def queue_repeats(study: optuna.Study, top: int, repeats: int) -> dict[int, int]:
    """Queue the repeats :func:`plan` asks for; returns it (leader -> repeats queued now)."""
    trials = study.get_trials(deepcopy=False)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    todo = plan([read(t) for t in trials], maximize, top, repeats)
    by_number = {t.number: t for t in trials}
    for number, count in todo.items():
        for _ in range(count):
            original = by_number[number]
            study.enqueue_trial(
                dict(original.params), user_attrs=repeat_attrs(original), skip_if_exists=False
            )
    return todo


def repeat_attrs(original: FrozenTrial) -> dict[str, Any]:
    """The user attributes a queued repeat of ``original`` starts with (what makes the loop run it with the
    same params: baseline-ness, the baseline's flags) and ``repeat_of``."""
    attrs: dict[str, Any] = {
        ATTR_BASELINE: bool(original.user_attrs.get(ATTR_BASELINE)),
        ATTR_REPEAT_OF: original.number,
    }
    flags = original.user_attrs.get(ATTR_BASELINE_FLAGS)
    if attrs[ATTR_BASELINE] and isinstance(flags, Mapping):
        attrs[ATTR_BASELINE_FLAGS] = dict(flags)
    return attrs


def front_of_originals(study: optuna.Study) -> list[FrozenTrial]:
    """Optuna's Pareto front (``study.best_trials``, constraints included) over the study's trials that are
    not repeats: a repeat is never a row of the front, and never hides its original from it. Without repeats
    it is ``study.best_trials``; with them, the same rule applied to a copy of the other trials in memory."""
    trials = study.get_trials(deepcopy=False)
    originals = [t for t in trials if repeat_of(t) is None]
    if len(originals) == len(trials):
        return list(study.best_trials)
    copy = optuna.create_study(directions=study.directions, storage=optuna.storages.InMemoryStorage())
    done = [t for t in originals if t.state == TrialState.COMPLETE]
    copy.add_trials(done)  # numbered 0, 1, ... in this order
    return [done[t.number] for t in copy.best_trials]


def waiting_repeats(trials: Iterable[FrozenTrial]) -> list[int]:
    """Numbers of the queued (WAITING) repeats."""
    return [t.number for t in trials if t.state == TrialState.WAITING and repeat_of(t) is not None]
