"""The stored trial record: the only module that knows the keys of the user attributes tuner stores.

Optuna owns the database; tuner keeps what it knows of a study and of each trial in Optuna's user
attributes. Writers and readers go through this module, so a key is spelt in one place.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial

from tuner.measure.result import TrialResult
from tuner.search.objectives import Evaluation
from tuner.search.restart_cost import Launch, launch_of, refused_before_launch

# study user attributes
ATTR_SPEC = "spec"
ATTR_BUDGET = "n_trials"
# trial user attributes
ATTR_BASELINE = "is_baseline"
ATTR_BASELINE_FLAGS = "baseline_flags"
ATTR_RESULT = "result"
ATTR_WORKER = "worker"
ATTR_HEARTBEAT = "heartbeat_at"
ATTR_INTERRUPTED = "interrupted"
ATTR_REQUEUED_FROM = "requeued_from"
ATTR_LAUNCHED = "launched"
ATTR_COMPILE_KEY = "compile_key"


def result_attrs(result: TrialResult, ev: Evaluation) -> dict[str, Any]:
    """The user attributes stored for a finished trial (JSON-safe: non-finite numbers become null)."""
    env = result.env or {}
    attrs: dict[str, Any] = _json_safe(
        {
            "status": result.status,
            "failure": None if result.ok and ev.failure is None else (ev.failure or result.status),
            "message": result.message,
            "feasible": ev.feasible,
            "argv": list(result.argv),
            "log_path": result.log_path,
            "log_tail": list(result.log_tail)[-40:],
            "vllm_version": env.get("vllm_version"),
            "hardware": env.get("hardware"),
            "started_at": result.started_at,
            "ended_at": result.ended_at,
            ATTR_LAUNCHED: launched(result),
            ATTR_RESULT: result.to_dict(),
        }
    )
    return attrs


def launched(result: TrialResult) -> bool:
    """Did the trial start a server? Not when a rule or the memory check refused it before launch."""
    return not refused_before_launch(result.status, result.memory_check, result.startup_s)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def study_launches(trials: list[FrozenTrial]) -> list[Launch]:
    """What the finished trials recorded about their server starts (:class:`tuner.search.restart_cost.Launch`)."""
    out = []
    for t in trials:
        launch = launch_of(t.user_attrs, trial_seconds(t), t.params)
        if launch is not None:
            out.append(launch)
    return out


def trial_seconds(t: FrozenTrial) -> float | None:
    """Start to completion of a finished trial (None while it runs)."""
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()
