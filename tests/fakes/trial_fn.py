"""A fake of the trial function (:func:`tuner.measure.trial.run_trial`) for study-loop tests without vLLM:
it measures a configuration with a deterministic formula and records what it would have launched."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tuner.config.argv import trial_flags
from tuner.config.space import prelaunch_violation
from tuner.config.spec import StudySpec
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.progress import NullReporter, Reporter

NULL_REPORTER = NullReporter()


def synthetic(params: Mapping[str, Any]) -> TrialResult:
    """A deterministic measurement of a configuration."""
    seqs = float(params.get("max-num-seqs", 16))
    gmu = float(params.get("gpu-memory-utilization", 0.3))
    metrics = {
        "output_throughput_tok_s": 100 * math.log2(seqs + 1) * gmu,
        "ttft_ms": {"p99": 60.0 * seqs},
        "completed": 8,
    }
    return TrialResult(
        status="ok",
        summary=Summary.from_dict(metrics),
        argv=["vllm", "serve", "/m", "--host", "127.0.0.1", "--port", "1"],
        flags=dict(params),
        env={"vllm_version": "0.0-fake", "hardware": "fake cpu"},
        started_at=time.time(),
        ended_at=time.time(),
    )


class Fake:
    """A trial function that records the configurations it would launch; ``behaviour(call_index, params)``
    may override the result. Like :func:`tuner.measure.trial.run_trial` it refuses a configuration broken by
    a pre-launch rule (``infeasible``, no launch, not recorded)."""

    def __init__(
        self, behaviour: Callable[[int, Mapping[str, Any]], TrialResult | None] | None = None
    ) -> None:
        self.calls: list[dict[str, Any]] = []
        self.behaviour = behaviour

    def __call__(
        self,
        spec: StudySpec,
        params: Mapping[str, Any],
        *,
        log_dir: Path,
        runtime_dir: Path,
        reporter: Reporter = NULL_REPORTER,
        best_so_far: float | None = None,
    ) -> TrialResult:
        flags, _model = trial_flags(spec, params)
        reason = prelaunch_violation(flags)
        if reason is not None:
            return TrialResult(status="infeasible", message=reason, flags=dict(flags))
        self.calls.append(dict(params))
        if self.behaviour is not None:
            out = self.behaviour(len(self.calls) - 1, params)
            if out is not None:
                return out
        return synthetic(params)
