"""What the finished trials recorded about their server starts, as :class:`tuner.search.restart_cost.Launch`."""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import FrozenTrial

from tuner.search.record._read import read
from tuner.search.record._records import TrialRecord
from tuner.search.restart_cost import Launch


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
