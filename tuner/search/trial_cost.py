"""What the study loop learns of restart cost as it goes (the rules are :mod:`tuner.search.restart_cost`'s).

* **Compile key** — every trial stores user attr ``compile_key`` (``key``, ``cache``, ``cached``: whether a
  trial in the same vLLM compile cache had started a server with that key before).
* **Restart cost** — with ``spec.compile_key_reuse`` ``rank`` or ``variants`` (default ``off``) and TPE,
  before each ``ask`` the sampler is given the trial costs learnt from the study's server starts, and ranks
  its candidates by expected improvement per second: configurations whose compile key vLLM has cached are
  preferred where TPE rates them about as promising."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from tuner.config.argv import trial_flags
from tuner.config.spec import StudySpec
from tuner.search.record import FINISHED_STATES, CompileKeyRecord, study_launches
from tuner.search.restart_cost import RestartCost, cache_identity, compile_key
from tuner.search.samplers import set_trial_cost
from tuner.server.env import server_env


class TrialCosts:
    """The restart cost of one worker's study (see the module docstring)."""

    def __init__(self, spec: StudySpec, sampler: optuna.samplers.BaseSampler) -> None:
        self.spec = spec
        self.cache = cache_identity(server_env(spec.server.env))
        self._mode = spec.compile_key_reuse
        self._aware = self._mode != "off" and set_trial_cost(sampler, None, self._mode)
        self._cost: RestartCost | None = None

    def before_ask(self, study: optuna.Study) -> None:
        """Learn the costs from ``study``'s finished trials; give them to its sampler when it ranks by cost."""
        launches = study_launches(study.get_trials(deepcopy=False, states=FINISHED_STATES))
        self._cost = RestartCost.learn(launches, cache=self.cache, key_of=self.key_of)
        if self._aware:
            set_trial_cost(study.sampler, self._cost, self._mode)

    def key_of(self, params: Mapping[str, Any]) -> str:
        """The compile key of a trial run with ``params``."""
        flags, model = trial_flags(self.spec, params)
        return compile_key(flags, model)

    def record(self, params: Mapping[str, Any]) -> CompileKeyRecord:
        """The compile key of a trial about to run with ``params``, and whether a trial of this compile cache
        started a server with it before (as learnt by the last :meth:`before_ask`)."""
        key = self.key_of(params)
        return CompileKeyRecord(key, self.cache, self._cost is not None and key in self._cost.compiled)
