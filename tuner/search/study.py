"""The study: open or create it, check it against the study file, queue the baseline, settle the budget,
store the study file, choose the sampler and its seed.

Contract of :func:`open_study`:

* **Study** — the Optuna study named ``spec.name`` in the storage (created, or continued), directions from
  ``spec.objectives``. Study user attributes: ``spec`` (the study file as JSON, secrets masked),
  ``n_trials`` (the budget), ``metric_names``, ``directions``, ``constraint_keys``, ``created_at``,
  ``tuner_version``, ``traffic_digest`` (:func:`tuner.load.traffic.traffic_digest`: the traffic-defining
  workload keys and the bytes of every file they name), ``constraints_as_list``; Optuna's ``metric_names``
  (set at creation, and on the first resume of a study made before they were). Nothing is written before
  the study file, the search space and its sampler, the storage URL and (for an existing study) its
  objectives and its study file are checked, so bad input leaves a database byte-identical.
* **Study-file changes** — on opening an existing study the file is compared with the stored one
  (:mod:`tuner.search.changes`) and the traffic digest with the stored digest. A change that invalidates
  the stored trials (search space, workload or a file it names, SLO, capacity rule, server command / flags /
  environment, model) is a :class:`~tuner.errors.UsageError` naming it, unless ``accept_changes``: then the
  new file and digest are stored, the trials stored before stay as they are (scored under the old rules),
  and a note says so. Harmless changes (budget, timeout, sampler, seed, ``confirm``...) are stored with a
  note. A study stored without a digest (an older tuner) gets one, silently. Objectives never change
  (Optuna's directions are fixed): a new study name is needed.
* **Budget** — ``n_trials`` given: stored for later runs; else the stored one; else ``spec.n_trials``.
* **Baseline** — with ``spec.baseline`` true (or a mapping of flag values), the creator of the study queues
  it first, so it is trial 0: no Optuna params, user attr ``is_baseline``; a mapping's flags are stored in
  user attr ``baseline_flags`` (they are not Optuna params). A worker that joins a study whose creator died
  before the setup was done queues it itself.
* **Warm start** — with ``prior: {sim: true}``, the creator then queues the simulator's best distinct
  configurations after the baseline (:func:`tuner.search.prior.warm_start`; its lines join the notes).
* **Sampler** — the file's sampler over the whole search space; the creator seeds it with the file's seed
  (reproducible), a worker that joins with a seed of its own derived from its pid, so that two workers do
  not propose the same configurations.

Optuna keeps a study's storage private, so :class:`StudyHandle` carries the storage tuner opened (the
public storage calls reach a trial by its id).
"""

from __future__ import annotations

import datetime as _dt
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.exceptions import DuplicatedStudyError
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from tuner import __version__
from tuner.config.paths import study_dir
from tuner.config.redact import spec_data
from tuner.config.space import distributions
from tuner.config.spec import FlagValue, StudySpec
from tuner.errors import UsageError
from tuner.load.traffic import traffic_digest
from tuner.search import changes as changes_mod
from tuner.search.objectives import constraint_keys
from tuner.search.prior import warm_start
from tuner.search.record import (
    ATTR_BASELINE,
    ATTR_BASELINE_FLAGS,
    ATTR_BUDGET,
    ATTR_CONSTRAINT_KEYS,
    ATTR_CONSTRAINTS_AS_LIST,
    ATTR_CREATED_AT,
    ATTR_DIRECTIONS,
    ATTR_LAUNCHED,
    ATTR_METRIC_NAMES,
    ATTR_SPEC,
    ATTR_TRAFFIC_DIGEST,
    ATTR_TUNER_VERSION,
    FINISHED_STATES,
    read,
    read_study,
    trial_seconds,
)
from tuner.search.samplers import make_sampler
from tuner.search.storage import open_storage, parse_url, sqlite_path, storage_errors

#: how long a worker that joins a study being created waits for its creator to finish the setup
JOIN_WAIT_S = 30.0


@dataclass(frozen=True)
class StudyHandle:
    """A study and the storage it lives in."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    study_id: int

    @classmethod
    def load(cls, study: optuna.Study, storage: optuna.storages.BaseStorage) -> StudyHandle:
        """The handle of ``study``, loaded from ``storage``."""
        return cls(study, storage, storage.get_study_id_from_name(study.study_name))

    def trial_id(self, number: int) -> int:
        """Optuna's storage id of trial ``number``."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def frozen(self, number: int) -> FrozenTrial:
        """Trial ``number`` as stored now."""
        return self.storage.get_trial(self.trial_id(number))


@dataclass(frozen=True)
class OpenedStudy:
    """What :func:`open_study` settled."""

    handle: StudyHandle
    url: str
    budget: int
    created: bool
    notes: tuple[str, ...] = ()  # one line each, for the user: study-file changes let through


def open_study(
    spec: StudySpec, url: str, *, n_trials: int | None, must_exist: bool, accept_changes: bool = False
) -> OpenedStudy:
    """Check the input, then open (or create) the study of ``spec`` at ``url`` and settle its budget and
    sampler (see the module docstring). Raises :class:`~tuner.errors.UsageError` for bad input, before any
    write, or :class:`~tuner.errors.StorageError`."""
    if n_trials is not None and n_trials <= 0:
        raise UsageError(f"--n-trials must be positive, got {n_trials}")
    parse_url(url)
    dists = distributions(spec)
    _sampler(spec, dists, seed=spec.seed)  # refuses a sampler/space mismatch before anything is written
    digest = traffic_digest(spec.workload, study_dir(spec))
    path = sqlite_path(url)
    if must_exist and path is not None and not path.exists():
        raise UsageError(f"no study database at {path}: start the study with `tuner run`")
    storage = open_storage(url, create=not must_exist)
    with storage_errors(url):
        now = Stored(spec_data(spec), digest, dists)
        handle, created, notes = _load_or_create(
            storage, spec, now, must_exist=must_exist, accept=accept_changes
        )
        budget = _settle_budget(handle.study, spec, n_trials, created)
        handle.study.sampler = _sampler(spec, dists, seed=_seed(spec, created))
        if created:
            notes += warm_start(handle.study, spec)  # after the budget: a joining worker waits for that
    return OpenedStudy(handle, url, budget, created, tuple(notes))


@dataclass(frozen=True)
class Stored:
    """What the study stores of its study file: the file as data and the traffic digest; and the search
    space's distributions (which Optuna stores with each trial)."""

    spec: dict[str, Any]
    digest: str
    dists: dict[str, BaseDistribution]


def _load_or_create(
    storage: optuna.storages.BaseStorage, spec: StudySpec, now: Stored, *, must_exist: bool, accept: bool
) -> tuple[StudyHandle, bool, list[str]]:
    """Load the study, or create it (queueing the baseline first); returns it, whether it was created, and
    the notes on study-file changes let through. Checks before it writes."""
    placeholder = optuna.samplers.RandomSampler()
    try:
        storage.get_study_id_from_name(spec.name)
        exists = True
    except KeyError:
        exists = False
    if not exists:
        if must_exist:
            raise UsageError(f"no study named {spec.name!r} in the database: start it with `tuner run`")
        try:
            study = optuna.create_study(
                storage=storage, study_name=spec.name, directions=_directions(spec), sampler=placeholder
            )
        except DuplicatedStudyError:
            pass  # another worker created it a moment ago
        else:
            queue_baseline(study, spec)
            study.set_user_attr(ATTR_CREATED_AT, _now_iso())
            study.set_user_attr(ATTR_CONSTRAINTS_AS_LIST, True)
            _write_spec_attrs(study, spec, now)
            return StudyHandle.load(study, storage), True, []
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=placeholder)
    _check_compatible(study, spec, now.dists)
    notes = _check_changes(study, spec, now, accept)
    waited = 0.0
    while ATTR_BUDGET not in study.user_attrs and waited < JOIN_WAIT_S:
        time.sleep(0.2)  # its creator is still queueing the baseline
        waited += 0.2
    creator_died = ATTR_BUDGET not in study.user_attrs
    if creator_died and not any(t.user_attrs.get(ATTR_BASELINE) for t in study.get_trials(deepcopy=False)):
        queue_baseline(study, spec)
    a = study.user_attrs
    if a.get(ATTR_SPEC) != now.spec or a.get(ATTR_TRAFFIC_DIGEST) != now.digest:
        _write_spec_attrs(study, spec, now)
    if study.metric_names != spec.metric_names:
        _set_metric_names(study, spec)  # a study stored before tuner set them
    return StudyHandle.load(study, storage), False, notes


def _check_changes(study: optuna.Study, spec: StudySpec, now: Stored, accept: bool) -> list[str]:
    """Compare the stored study file and traffic digest with ``now`` (module docstring): raise for a change
    that invalidates the stored trials unless ``accept``; return the notes to show."""
    stored = read_study(study)
    changes = [] if stored.spec is None else changes_mod.diff(_normalised(stored.spec), now.spec)
    changes = [c for c in changes if c.path != "source"]  # the same file named another way
    bad = [c for c in changes if c.invalidates]
    what = [changes_mod.describe(bad)] if bad else []
    if stored.traffic_digest is not None and stored.traffic_digest != now.digest:
        files = ", ".join(changes_mod.file_keys(now.spec.get("workload"), "workload.")) or "none named"
        what.append(
            f"the traffic changed since the study started (digest {stored.traffic_digest[:12]} -> "
            f"{now.digest[:12]}; files of the workload: {files})"
        )
    n = sum(t.state in FINISHED_STATES for t in study.get_trials(deepcopy=False))
    if what and not accept:
        raise UsageError(
            f"study {spec.name!r} was started with another study file: {'; '.join(what)}; its {n} stored "
            "trial(s) were measured under the old one. Give the study a new name, or pass --accept-changes "
            "(the stored trials stay, scored under the old rules; the new file is stored)"
        )
    notes = [f"--accept-changes: {'; '.join(what)}; the {n} trial(s) stored before stay as measured"]
    harmless = [c for c in changes if not c.invalidates]
    if harmless:
        notes.append(f"study file changed ({changes_mod.describe(harmless)}); the stored trials stay valid")
    return notes[0 if what else 1 :]


def _normalised(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The stored study file read by today's schema (defaults of keys added since filled in), when it still
    reads; else as stored."""
    try:
        return spec_data(StudySpec.model_validate(dict(stored)))
    except ValidationError:
        return dict(stored)


def _check_compatible(study: optuna.Study, spec: StudySpec, dists: Mapping[str, BaseDistribution]) -> None:
    """Refuse what even ``accept_changes`` cannot let through: other objectives, or a searched flag whose
    distribution Optuna cannot mix with the stored trials' (another kind, or log scale switched)."""
    directions = [d.name.lower() for d in study.directions]
    stored_metrics = study.user_attrs.get(ATTR_METRIC_NAMES)
    if directions != spec.direction_names or (
        stored_metrics is not None and stored_metrics != spec.metric_names
    ):
        have = stored_metrics or directions
        raise UsageError(
            f"study {spec.name!r} exists with objectives {have}, the file asks for {spec.metric_names}; "
            "give the study a new name"
        )
    for t in study.get_trials(deepcopy=False, states=FINISHED_STATES):
        for name, old in t.distributions.items():
            if name in dists:
                try:
                    check_distribution_compatibility(old, dists[name])
                except ValueError as e:
                    raise UsageError(
                        f"study {spec.name!r}: search.{name} cannot change that way in a stored study ({e}); "
                        "give the study a new name"
                    ) from None


def _directions(spec: StudySpec) -> list[optuna.study.StudyDirection]:
    return [optuna.study.StudyDirection[d.upper()] for d in spec.direction_names]


def _write_spec_attrs(study: optuna.Study, spec: StudySpec, now: Stored) -> None:
    study.set_user_attr(ATTR_SPEC, now.spec)
    study.set_user_attr(ATTR_TRAFFIC_DIGEST, now.digest)
    _set_metric_names(study, spec)
    study.set_user_attr(ATTR_METRIC_NAMES, spec.metric_names)
    study.set_user_attr(ATTR_DIRECTIONS, spec.direction_names)
    study.set_user_attr(ATTR_CONSTRAINT_KEYS, constraint_keys(spec))
    study.set_user_attr(ATTR_TUNER_VERSION, __version__)


def _set_metric_names(study: optuna.Study, spec: StudySpec) -> None:
    """Optuna's objective names (what optuna-dashboard and Optuna's plots label the axes with)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(spec.metric_names)


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


def queue_baseline(study: optuna.Study, spec: StudySpec) -> None:
    """Queue the baseline trial of ``spec`` (nothing when the study has none)."""
    flags = baseline_flags(spec)
    if flags is None:
        return
    attrs: dict[str, Any] = {ATTR_BASELINE: True}
    if flags:
        attrs[ATTR_BASELINE_FLAGS] = flags
    study.enqueue_trial({}, user_attrs=attrs, skip_if_exists=False)


def _seed(spec: StudySpec, created: bool) -> int | None:
    """The creator's seed is the file's; a joining worker's is derived from its pid (module docstring)."""
    if spec.seed is None:
        return None
    return spec.seed if created else (spec.seed * 1_000_003 + os.getpid()) % 2**31


def _sampler(
    spec: StudySpec, dists: dict[str, BaseDistribution], *, seed: int | None
) -> optuna.samplers.BaseSampler:
    """The file's sampler over the whole search space (constraints are set on each trial, so none here)."""
    return make_sampler(
        spec.sampler, seed=seed, n_objectives=len(spec.objectives), constraints_func=None, search_space=dists
    )


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def fits_before(trials: Sequence[FrozenTrial], deadline: float) -> bool:
    """Is there time for one more trial? Mean duration of the launched finished trials (none: yes)."""
    left = deadline - time.time()
    if left <= 0:
        return False
    durations = [
        took
        for t in trials
        if t.state in FINISHED_STATES
        and t.user_attrs.get(ATTR_LAUNCHED)
        and (took := trial_seconds(t)) is not None
    ]
    return not durations or left >= sum(durations) / len(durations)


def best_capacity(study: optuna.Study, spec: StudySpec) -> float | None:
    """The study's best SLO capacity so far (output tok/s of a feasible measured trial), when its first
    objective is to maximise output throughput; None otherwise or before any feasible trial."""
    if spec.metric_names[0] != "output_throughput" or spec.direction_names[0] != "maximize":
        return None
    found = [
        rec.values[0]
        for rec in map(read, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if rec.feasible and rec.values and rec.repeat_of is None
    ]
    return max(found, default=None)
