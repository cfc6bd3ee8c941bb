"""The keys of everything tuner stores in Optuna's attributes, and the states of a finished trial.

**States.** A finished trial of the search is COMPLETE (measured) or, since this rule, PRUNED (failed:
no valid values; :meth:`tuner.search.objectives.Evaluation.told` says when and why); older studies store
failed trials COMPLETE with penalty values. :data:`FINISHED_STATES` and
:attr:`tuner.search.record.TrialRecord.finished` cover both; a failure is told by ``status``
(:attr:`~tuner.search.record.TrialRecord.failed`), never by the values, and
:attr:`~tuner.search.record.TrialRecord.scored_values` hides the penalty values of old records.
"""

from __future__ import annotations

from optuna.trial import TrialState

# study user attributes
ATTR_SPEC = "spec"
ATTR_BUDGET = "n_trials"
ATTR_METRIC_NAMES = "metric_names"
ATTR_DIRECTIONS = "directions"
ATTR_CONSTRAINT_KEYS = "constraint_keys"
ATTR_TUNER_VERSION = "tuner_version"
ATTR_CREATED_AT = "created_at"
ATTR_TRAFFIC_DIGEST = "traffic_digest"  # tuner.load.traffic.traffic_digest of the study's workload
ATTR_CONSTRAINTS_AS_LIST = "constraints_as_list"  # True: trials store the ``constraints`` list too
ATTR_SIM_REFIT = "sim_refit"  # the latest refit of the simulator's constants (tuner.sim.refit.Refit.to_dict)
# trial user attributes
ATTR_BASELINE = "is_baseline"
ATTR_BASELINE_FLAGS = "baseline_flags"
ATTR_RUN_PARAMS = "run_params"
ATTR_RESULT = "result"
ATTR_WORKER = "worker"
ATTR_HEARTBEAT = "heartbeat_at"
ATTR_INTERRUPTED = "interrupted"
ATTR_REQUEUED_FROM = "requeued_from"
ATTR_REPEAT_OF = "repeat_of"  # a confirming re-measurement: the number of the trial it repeats
ATTR_LAUNCHED = "launched"
ATTR_COMPILE_KEY = "compile_key"
ATTR_STATUS = "status"
ATTR_FAILURE = "failure"
ATTR_MESSAGE = "message"
ATTR_FEASIBLE = "feasible"
ATTR_ARGV = "argv"
ATTR_LOG_PATH = "log_path"
ATTR_LOG_TAIL = "log_tail"
ATTR_VLLM_VERSION = "vllm_version"
ATTR_HARDWARE = "hardware"
ATTR_STARTED_AT = "started_at"
ATTR_ENDED_AT = "ended_at"
# flat copies for optuna-dashboard (tuner.search.record._write's docstring)
ATTR_SLO_VERDICT = "slo_verdict"
ATTR_SCORED_CONCURRENCY = "scored_concurrency"
ATTR_SCORED_RATE = "scored_request_rate"
# keys added for the loop
ATTR_SURPLUS = "surplus"
ATTR_DUPLICATE_OF = "duplicate_of"
ATTR_ERROR = "error"
ATTR_COPY_OF = "copy_of"
# the simulator's view (tuner.search.prior reads and writes them): a trial's prediction, a warm start's rank
ATTR_PREDICTION = "sim_prediction"
ATTR_WARM_START = "warm_start"
# trial system attribute: Optuna's single list of constraint values (what optuna-dashboard reads)
CONSTRAINTS_LIST = "constraints"

#: the Optuna states of a finished trial of the search (module docstring)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
