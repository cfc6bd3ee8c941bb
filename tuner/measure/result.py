"""What one trial produced: :class:`TrialResult`. Pure data, JSON in and out.

``status`` is ``"ok"`` or a failure class from :mod:`tuner.server.failures` (``oom``, ``invalid_config``,
``startup_timeout``, ``crashed``, ``load_errors``, ``infeasible`` for a rule refused before launch,
``interrupted`` when the user stopped it). ``summary`` is the scored measurement: in fixed mode the one load
run, in capacity mode the highest-throughput step that met the SLO (else the first step); ``steps`` holds
every capacity step in order (one element in fixed mode); ``traffic`` says what was sent, beside what was
measured.

:func:`tuner.measure.trial.run_trial` builds one at the end of a trial, in one place, with its secrets
already masked; nothing downstream needs to change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner.measure.metrics import Summary


@dataclass
class TrialResult:
    status: str
    argv: list[str] = field(default_factory=list)
    log_path: str | None = None
    summary: Summary | None = None
    steps: list[Summary] = field(default_factory=list)
    #: index into ``steps`` of the scored step (capacity mode), or None
    scored_step: int | None = None
    message: str | None = None
    log_tail: list[str] = field(default_factory=list)
    started_at: float | None = None  # epoch seconds
    ended_at: float | None = None
    startup_s: float | None = None  # launch to /health 200
    flags: dict[str, Any] = field(default_factory=dict)  # effective flags (fixed + trial)
    #: environment facts: vllm_version, hardware (GPU name or CPU model), gpu {...}
    env: dict[str, Any] = field(default_factory=dict)
    #: GPU telemetry summary (mean/max per signal) or {"available": False}
    gpu: dict[str, Any] = field(default_factory=dict)
    #: server-side view from /metrics: kv_cache_usage mean/max, preemptions, waiting max, prefix hit rate
    server_metrics: dict[str, Any] = field(default_factory=dict)
    #: one word for why the trial is where it is: kv-bound, queueing, compute-bound (or "")
    bottleneck: str = ""
    #: the predictive memory check before launch (GPU only): tuner.measure.memory.FitVerdict.to_dict()
    memory_check: dict[str, Any] = field(default_factory=dict)
    #: capacity mode: ``levels`` (of each step), ``stop`` (why stepping ended), ``bracket``
    #: (:meth:`tuner.measure.capacity.Bracket.to_dict`), ``load_s`` (seconds of measured load), ``pruned``
    #: (steps cut short once their verdict was settled)
    capacity: dict[str, Any] = field(default_factory=dict)
    #: what was sent: :meth:`tuner.load.traffic.Traffic.summary` (count, lengths, sessions, arrivals, digest)
    traffic: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The ``tuner measure --json`` object (``metrics`` is the scored summary)."""
        d: dict[str, Any] = {
            "status": self.status,
            "argv": list(self.argv),
            "log": self.log_path,
            "metrics": self.summary.to_dict() if self.summary else None,
        }
        if len(self.steps) > 1 or self.scored_step is not None:
            d["steps"] = [s.to_dict() for s in self.steps]
            d["scored_step"] = self.scored_step
        if self.message:
            d["message"] = self.message
        if self.log_tail:
            d["log_tail"] = list(self.log_tail)
        for k in ("started_at", "ended_at", "startup_s"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        for k in ("flags", "env", "gpu", "server_metrics", "memory_check", "capacity", "traffic"):
            v = getattr(self, k)
            if v:
                d[k] = v
        if self.bottleneck:
            d["bottleneck"] = self.bottleneck
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialResult:
        return cls(
            status=d["status"],
            argv=list(d.get("argv") or []),
            log_path=d.get("log"),
            summary=Summary.from_dict(d["metrics"]) if d.get("metrics") else None,
            steps=[Summary.from_dict(s) for s in d.get("steps") or []],
            scored_step=d.get("scored_step"),
            message=d.get("message"),
            log_tail=list(d.get("log_tail") or []),
            started_at=d.get("started_at"),
            ended_at=d.get("ended_at"),
            startup_s=d.get("startup_s"),
            flags=dict(d.get("flags") or {}),
            env=dict(d.get("env") or {}),
            gpu=dict(d.get("gpu") or {}),
            server_metrics=dict(d.get("server_metrics") or {}),
            bottleneck=d.get("bottleneck") or "",
            memory_check=dict(d.get("memory_check") or {}),
            capacity=dict(d.get("capacity") or {}),
            traffic=dict(d.get("traffic") or {}),
        )
