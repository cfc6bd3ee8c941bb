"""Is there room on a trial's GPUs before its server starts? The free-memory rule, and the wait. Pure.

vLLM claims ``gpu-memory-utilization x total`` of each GPU and refuses to start when a GPU's free memory is
below that ("Free memory on device ... is less than desired GPU memory utilization"), which tuner would
otherwise file as the configuration's ``oom``. So before a server starts its GPUs are read (NVML:
:func:`tuner.measure.telemetry.nvml.gpu_memory_state`) and judged here.

Contract:

* :func:`check_free` — a GPU is *blocked* when its free MiB is below :func:`need_mib` (``ceil(gmu x
  total)``). A blocker names the GPU (NVML's index), the memory in use and, when NVML lists processes, their
  pids, split into tuner's own servers (``own_pids``: the process groups of tuner's pidfiles) and the
  rest. ``foreign`` is True when a listed process is not tuner's, False when every listed process is
  tuner's, None when NVML lists none (no process API, or processes it cannot see from here).
* :func:`wait_for_free` — reads, judges, and while some GPU is blocked sleeps ``poll_s`` and reads again,
  up to ``wait_s``; it says once (and again when the reason changes) why it waits. Returns None when the
  GPUs are free (or cannot be read: no NVML, no check), else the last blocked verdict. Every effect (the
  reading, the clock, the sleep, the notice) is given by the caller.
* :class:`GpuBusy` — what the trial runner raises with that verdict: not a verdict on the configuration;
  the study loop gives the trial back (FAIL, failure class :data:`tuner.server.failures.GPU_BUSY`) and
  queues its params again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.errors import TunerError
from tuner.server.failures import GPU_BUSY

#: the longest pause between two readings while a trial waits (seconds)
MAX_POLL_S = 5.0
_GIB_MIB = 1024


@dataclass(frozen=True)
class GpuProcess:
    """A process NVML lists on a GPU; ``used_mib`` None where NVML does not say."""

    pid: int
    used_mib: int | None = None


@dataclass(frozen=True)
class GpuMemory:
    """One GPU of the trial's set, now. ``index``: NVML's (physical) index; ``processes``: None when NVML
    gives no process list."""

    index: int
    total_mib: int
    used_mib: int
    free_mib: int
    processes: tuple[GpuProcess, ...] | None = None


@dataclass(frozen=True)
class Blocker:
    """A GPU whose free memory is below what the server needs."""

    gpu: GpuMemory
    need_mib: int
    own_pids: tuple[int, ...]
    foreign_pids: tuple[int, ...]

    @property
    def foreign(self) -> bool | None:
        if self.foreign_pids:
            return True
        return False if self.own_pids else None

    def describe(self, gmu: float) -> str:
        """``GPU 1 has 70.2 GiB in use by pid 4242 (not tuner's), 69.8 GiB free; needs 126.4 GiB free for
        gpu-memory-utilization 0.9``."""
        by: list[str] = []
        if self.foreign_pids:
            by.append(f"{_pids(self.foreign_pids)} (not tuner's)")
        if self.own_pids:
            by.append(f"tuner's own server ({_pids(self.own_pids)})")
        who = " and ".join(by) if by else "processes NVML does not list"
        g = self.gpu
        return (
            f"GPU {g.index} has {_gib(g.used_mib)} GiB in use by {who}, {_gib(g.free_mib)} GiB free; "
            f"needs {_gib(self.need_mib)} GiB free for gpu-memory-utilization {gmu:g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.index,
            "used_mib": self.gpu.used_mib,
            "free_mib": self.gpu.free_mib,
            "need_mib": self.need_mib,
            "own_pids": list(self.own_pids),
            "foreign_pids": list(self.foreign_pids),
            "foreign": self.foreign,
        }


@dataclass(frozen=True)
class FreeVerdict:
    """:func:`check_free`'s answer: ``blocked`` is empty when every GPU has room."""

    gmu: float
    blocked: tuple[Blocker, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.blocked

    @property
    def foreign(self) -> bool | None:
        """True when a process not tuner's holds memory on a blocked GPU; False when only tuner's servers
        do; None when unknown (or nothing is blocked)."""
        kinds = [b.foreign for b in self.blocked]
        if True in kinds:
            return True
        return False if kinds and all(k is False for k in kinds) else None

    @property
    def reason(self) -> str:
        return "; ".join(b.describe(self.gmu) for b in self.blocked) if self.blocked else "every GPU has room"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gmu": self.gmu,
            "foreign": self.foreign,
            "reason": self.reason,
            "blocked": [b.to_dict() for b in self.blocked],
        }


class GpuBusy(TunerError):
    """A trial's GPUs lacked the free memory its server needs for the whole wait (not the configuration's
    fault). ``str()`` is the reason; ``verdict`` the last reading's :class:`FreeVerdict`."""

    failure = GPU_BUSY

    def __init__(self, verdict: FreeVerdict, waited_s: float) -> None:
        self.verdict = verdict
        self.waited_s = waited_s
        super().__init__(f"{verdict.reason} (waited {waited_s:.0f} s)")


def need_mib(total_mib: int, gmu: float) -> int:
    """Free MiB vLLM demands at start on a GPU of ``total_mib``: ``ceil(gmu x total)``."""
    return math.ceil(gmu * total_mib)


def check_free(gpus: Sequence[GpuMemory], gmu: float, own_pids: Collection[int] = ()) -> FreeVerdict:
    """Judge each GPU of the trial's set against ``gmu`` (see the module contract)."""
    blocked: list[Blocker] = []
    for g in gpus:
        need = need_mib(g.total_mib, gmu)
        if g.free_mib >= need:
            continue
        pids = sorted({p.pid for p in g.processes or ()})
        own = tuple(p for p in pids if p in own_pids)
        foreign = tuple(p for p in pids if p not in own_pids)
        blocked.append(Blocker(g, need, own, foreign))
    return FreeVerdict(gmu, tuple(blocked))


def poll_interval(wait_s: float) -> float:
    """Seconds between readings while waiting up to ``wait_s``: a thirtieth of it, 0.1 to :data:`MAX_POLL_S`."""
    return min(MAX_POLL_S, max(0.1, wait_s / 30))


def wait_for_free(
    read: Callable[[], FreeVerdict | None],
    *,
    wait_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    notice: Callable[[str], None],
) -> FreeVerdict | None:
    """Read until every GPU has room or ``wait_s`` passed (see the module contract)."""
    start = clock()
    said = ""
    while True:
        verdict = read()
        if verdict is None or verdict.ok:
            return None
        waited = clock() - start
        if waited >= wait_s:
            return verdict
        if verdict.reason != said:
            said = verdict.reason
            notice(f"{said}; waiting up to {wait_s:.0f} s")
        sleep(min(poll_interval(wait_s), max(0.0, wait_s - waited)))


def _pids(pids: Sequence[int]) -> str:
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(str(p) for p in pids)


def _gib(mib: float) -> str:
    return f"{mib / _GIB_MIB:.1f}"


__all__ = [
    "Blocker",
    "FreeVerdict",
    "GpuBusy",
    "GpuMemory",
    "GpuProcess",
    "check_free",
    "need_mib",
    "poll_interval",
    "wait_for_free",
]
