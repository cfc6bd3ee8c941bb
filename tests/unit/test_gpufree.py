"""The free-memory rule before a server starts (tuner.measure.gpufree): table tests, and the wait with a
scripted clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tuner.measure.gpufree import (
    MAX_POLL_S,
    FreeVerdict,
    GpuBusy,
    GpuMemory,
    GpuProcess,
    check_free,
    need_mib,
    poll_interval,
    wait_for_free,
)
from tuner.measure.memory import DEFAULT_GPU_MEMORY_UTILIZATION, gpu_memory_utilization
from tuner.server.failures import GPU_BUSY, OOM

H200 = 143771  # MiB, as NVML reports it
OWN = {17, 18}  # tuner's server and its engine core


def gpu(index: int, used: int, procs: tuple[GpuProcess, ...] | None = ()) -> GpuMemory:
    return GpuMemory(index, H200, used, H200 - used, procs)


@dataclass(frozen=True)
class Case:
    name: str
    gpus: tuple[GpuMemory, ...]
    gmu: float
    blocked: tuple[int, ...]  # NVML indices
    foreign: bool | None
    says: tuple[str, ...] = ()


CASES = (
    Case("every GPU free", (gpu(0, 500), gpu(1, 600)), 0.9, (), None),
    Case(
        "a foreign process fills one of two GPUs",
        (gpu(0, 500), gpu(1, 71_900, (GpuProcess(4242, 71_400),))),
        0.9,
        (1,),
        True,
        ("GPU 1 has 70.2 GiB in use by pid 4242 (not tuner's), 70.2 GiB free", "needs 126.4 GiB free", "0.9"),
    ),
    Case(
        "our own leftover server: not foreign",
        (gpu(0, 130_000, (GpuProcess(18, 129_500),)),),
        0.5,
        (0,),
        False,
        ("by tuner's own server (pid 18)",),
    ),
    Case(
        "NVML without process info",
        (gpu(0, 100_000, None),),
        0.9,
        (0,),
        None,
        ("in use by processes NVML does not list",),
    ),
    Case(
        "an empty process list (processes NVML cannot see from here)",
        (gpu(0, 100_000),),
        0.9,
        (0,),
        None,
        ("processes NVML does not list",),
    ),
    Case(
        "foreign beside our own: foreign",
        (gpu(0, 100_000, (GpuProcess(17), GpuProcess(9, 50_000), GpuProcess(8))),),
        0.9,
        (0,),
        True,
        ("pids 8, 9 (not tuner's) and tuner's own server (pid 17)",),
    ),
    Case(
        "a small share fits beside a foreign process", (gpu(0, 70_000, (GpuProcess(4242),)),), 0.5, (), None
    ),
    Case("free exactly what is needed", (gpu(0, H200 - need_mib(H200, 0.9)),), 0.9, (), None),
    Case("one MiB short", (gpu(0, H200 - need_mib(H200, 0.9) + 1, (GpuProcess(5),)),), 0.9, (0,), True),
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_rule(case: Case) -> None:
    verdict = check_free(case.gpus, case.gmu, OWN)
    assert tuple(b.gpu.index for b in verdict.blocked) == case.blocked
    assert verdict.ok == (not case.blocked)
    assert verdict.foreign is case.foreign
    for text in case.says:
        assert text in verdict.reason
    assert "oom" not in verdict.reason.split()
    assert verdict.to_dict()["blocked"] == [b.to_dict() for b in verdict.blocked]


def test_need_is_gmu_times_total_rounded_up() -> None:
    assert need_mib(H200, 0.9) == 129394  # 129393.9
    assert need_mib(1000, 0.5) == 500


def test_gmu_comes_from_the_one_memory_model() -> None:
    assert gpu_memory_utilization({}) == DEFAULT_GPU_MEMORY_UTILIZATION
    assert gpu_memory_utilization({"gpu-memory-utilization": 0.5}) == 0.5
    assert gpu_memory_utilization({"gpu_memory_utilization": "0.3"}) == 0.3
    assert gpu_memory_utilization({"gpu-memory-utilization": "lots"}) is None


def test_gpu_busy_is_its_own_class_not_oom() -> None:
    verdict = check_free((gpu(1, 71_900, (GpuProcess(4242),)),), 0.9)
    err = GpuBusy(verdict, 300)
    assert err.failure == GPU_BUSY != OOM
    assert str(err).startswith("GPU 1 has 70.2 GiB in use by pid 4242 (not tuner's)")
    assert str(err).endswith("(waited 300 s)")


class Script:
    """Readings in turn (the last one repeats), a clock that moves only when slept."""

    def __init__(self, *readings: FreeVerdict | None) -> None:
        self.readings = list(readings)
        self.t = 0.0
        self.slept: list[float] = []
        self.said: list[str] = []

    def read(self) -> FreeVerdict | None:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s

    def wait(self, wait_s: float) -> FreeVerdict | None:
        return wait_for_free(
            self.read, wait_s=wait_s, clock=self.clock, sleep=self.sleep, notice=self.said.append
        )


FULL = check_free((gpu(1, 100_000, (GpuProcess(4242),)),), 0.9)
OTHER = check_free((gpu(1, 110_000, (GpuProcess(4243),)),), 0.9)
FREE = check_free((gpu(1, 500),), 0.9)


def test_waits_until_the_memory_is_freed() -> None:
    s = Script(FULL, FULL, FREE)
    assert s.wait(300) is None
    assert s.slept == [5.0, 5.0]
    assert len(s.said) == 1 and s.said[0].startswith("GPU 1 has") and "waiting up to 300 s" in s.said[0]


def test_gives_up_after_the_wait_with_the_last_verdict() -> None:
    s = Script(FULL, OTHER)
    assert s.wait(152) is OTHER
    assert sum(s.slept) == 152 and s.slept[-1] == 2.0  # never past the bound
    assert len(s.said) == 2  # said again when the reason changed


def test_free_at_once_or_no_nvml_means_no_wait() -> None:
    for reading in (FREE, None):
        s = Script(reading)
        assert s.wait(300) is None and s.slept == [] and s.said == []


def test_no_wait_allowed_gives_up_at_once() -> None:
    s = Script(FULL)
    assert s.wait(0) is FULL and s.slept == []


def test_poll_interval() -> None:
    assert poll_interval(300) == MAX_POLL_S
    assert poll_interval(3) == 0.1
    assert poll_interval(0) == 0.1
    assert poll_interval(60) == 2.0
