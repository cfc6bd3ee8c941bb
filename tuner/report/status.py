"""A study's progress for ``tuner status``: trials finished, running, queued, the best so far, the time left,
its server starts by compile key and its confirmed configurations (mean ± spread, :mod:`tuner.report.noise`).
Reads the study through :mod:`tuner.search.record`; prints nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.report.noise import Spread, spreads, within_noise
from tuner.report.traffic import describe_traffic, study_traffic
from tuner.search.record import FINISHED_STATES, TrialRecord, launch_of, read, read_study
from tuner.search.restart_cost import Launch


@dataclass(frozen=True)
class StartSummary:
    """Server starts of a study by kind, and its rate of trials (for ``tuner status``)."""

    cached: int
    new: int
    cached_mean_s: float | None
    new_mean_s: float | None
    trials_per_hour: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cached_starts": self.cached,
            "new_key_starts": self.new,
            "cached_start_mean_s": self.cached_mean_s,
            "new_key_start_mean_s": self.new_mean_s,
            "trials_per_hour": self.trials_per_hour,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StartSummary:
        return cls(
            cached=d["cached_starts"],
            new=d["new_key_starts"],
            cached_mean_s=d["cached_start_mean_s"],
            new_mean_s=d["new_key_start_mean_s"],
            trials_per_hour=d["trials_per_hour"],
        )

    def describe(self, cached_words: str = "with a compiled key") -> str:
        """``3 with a compiled key (mean 81.6 s), 6 new (mean 111.0 s); 26.8 trials per hour`` (parts without
        data left out)."""
        parts = []
        if self.cached:
            parts.append(f"{self.cached} {cached_words} (mean {self.cached_mean_s:.1f} s)")
        if self.new:
            parts.append(f"{self.new} new (mean {self.new_mean_s:.1f} s)")
        text = ", ".join(parts) or "none healthy"
        rate = self.trials_per_hour
        return text if rate is None else f"{text}; {rate:.1f} trials per hour"


def summarize_starts(launches: Iterable[Launch]) -> StartSummary:
    """Counts and mean start of compiled-key and new-key starts; trials per hour of the time of trials that
    started a server (a trial refused before launch takes a second and would inflate the rate)."""
    seen = list(launches)
    cached = [x.startup_s for x in seen if x.cached and x.startup_s is not None]
    new = [x.startup_s for x in seen if not x.cached and x.startup_s is not None]
    durations = [x.trial_s for x in seen if x.launched and x.trial_s is not None and x.trial_s > 0]
    return StartSummary(
        cached=len(cached),
        new=len(new),
        cached_mean_s=statistics.fmean(cached) if cached else None,
        new_mean_s=statistics.fmean(new) if new else None,
        trials_per_hour=3600.0 * len(durations) / sum(durations) if durations else None,
    )


def describe_starts(starts: Mapping[str, Any] | None) -> str | None:
    """``3 with a compiled key (mean 81.6 s), 6 new (mean 110.9 s); 26.8 trials per hour`` from a status
    row's ``starts`` (parts without data left out); None for a study without compile-key records."""
    return StartSummary.from_dict(starts).describe() if starts else None


def study_status(study: optuna.Study) -> dict[str, Any]:
    """One study's status row (the JSON of ``tuner status --json``): ``study``, ``budget``, ``finished``
    (trials of the search: repeats aside), ``ok``, ``failed``, ``repeats`` (finished repeats of ``tuner
    confirm``), ``running``, ``orphaned``, ``queued``, ``interrupted``, ``best`` (every objective of the best
    trial, :func:`tuner.report.pareto.best_so_far`), ``time_left_s`` (None without a budget left, a launched
    trial to time or a live trial running: a study nobody runs has no time left to guess), ``sent`` (what
    was sent, :func:`tuner.report.traffic.describe_traffic`; "" when no trial stored it), ``starts`` (:meth:`StartSummary.to_dict`, None for a
    study without compile-key records), ``objective`` (the first objective's metric) and ``confirmed``
    (:func:`confirmed`, on that objective), ``sim_refit`` (the simulator's refit constants in words,
    :func:`tuner.search.prior.refit_summary`; None without one) and ``sim_error`` (the simulator's
    prediction error over the finished trials, :func:`tuner.search.prior.error_summary`; None without
    predictions)."""
    from tuner.report.pareto import best_so_far, metric_names
    from tuner.search.prior import error_summary, refit_summary
    from tuner.search.workers import trial_is_orphan

    trials = study.get_trials(deepcopy=False)
    records = [read(t) for t in trials]
    now = time.time()
    done = [r for r in records if r.finished]
    complete = [r for r in done if r.repeat_of is None]
    running = [t for t in trials if t.state == TrialState.RUNNING and not trial_is_orphan(t, now=now)]
    stored = read_study(study)
    budget = stored.budget
    slo = (stored.spec or {}).get("slo")
    limits = slo.items() if isinstance(slo, dict) else ()
    slo_metrics = [k.removesuffix("_ms") for k, v in limits if isinstance(k, str) and v is not None]
    launched = [r.seconds for r in complete if r.launched and r.seconds is not None]
    left: float | None = None
    remaining = max(budget - len(complete), 0) if budget is not None else 0
    if remaining and launched and running:  # nobody runs it: no wall-clock guess
        left = remaining * (sum(launched) / len(launched)) / len(running)
    # none for a study from a tuner without compile-key records
    launches = [x for x in map(launch_of, done) if x is not None]
    return {
        "study": study.study_name,
        "budget": budget,
        "finished": len(complete),
        "ok": sum(not r.failed for r in complete),
        "failed": sum(r.failed for r in complete),
        "repeats": len(done) - len(complete),
        "running": len(running),
        "orphaned": sum(r.state == TrialState.RUNNING for r in records) - len(running),
        "queued": sum(r.state == TrialState.WAITING for r in records),
        "interrupted": sum(r.state == TrialState.FAIL and r.interrupted for r in records),
        "best": best_so_far(study),
        "time_left_s": left,
        "sent": describe_traffic(study_traffic(t for t in trials if t.state in FINISHED_STATES)),
        # server starts with a compiled / a new compile key, and trials per hour (None: not recorded)
        "starts": summarize_starts(launches).to_dict() if launches else None,
        "objective": metric_names(study)[0],
        "confirmed": confirmed(records, study.directions[0] == optuna.study.StudyDirection.MAXIMIZE),
        "sim_refit": refit_summary(study),
        "sim_error": error_summary(trials, [metric_names(study)[0], *slo_metrics]),
    }


def confirmed(records: Iterable[TrialRecord], maximize: bool) -> list[dict[str, Any]]:
    """The configurations measured more than once, best mean first: :meth:`Spread.to_dict` of each, with
    ``within_noise_of``: the other confirmed trials whose range overlaps (:func:`within_noise`)."""
    sign = -1.0 if maximize else 1.0
    found = sorted(
        (s for s in spreads(records, maximize).values() if s.confirmed),
        key=lambda s: (sign * s.mean, s.trial),
    )
    return [
        {**s.to_dict(), "within_noise_of": [o.trial for o in found if o is not s and within_noise(s, o)]}
        for s in found
    ]


def describe_confirmed(row: Mapping[str, Any], unit: str = "") -> str:
    """``#7 4,504 ± 40 tok/s over 3 runs (within noise of #12)`` from a row of :func:`confirmed`."""
    s = Spread(row["trial"], row["n"], row["mean"], row["low"], row["high"])
    near = ", ".join(f"#{n}" for n in row["within_noise_of"])
    return f"#{s.trial} {s.describe(unit)} over {s.n} runs" + (f" (within noise of {near})" if near else "")


def human_duration(seconds: float) -> str:
    """``1h05m``, ``3m07s``, ``42s`` (whole seconds, rounded down)."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
