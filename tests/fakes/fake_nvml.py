"""A fake NVML module (the part of ``pynvml`` tuner uses), for tests without a GPU: memory, utilisation,
power, clocks, temperature and the processes on each GPU (``nvmlDeviceGetComputeRunningProcesses``).
Tests inject it (``nvml=``) where tuner would import ``pynvml``."""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass
class FakeProcess:
    """What ``nvmlDeviceGetComputeRunningProcesses`` lists: a pid and its memory (bytes; None: not known)."""

    pid: int
    usedGpuMemory: int | None = None  # pynvml's spelling


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # pynvml's spelling
    pass


@dataclass
class FakeGpu:
    name: str = "NVIDIA H200"
    uuid: str = "GPU-aaaa-0000"
    total_mib: int = 143771
    used_mib: float = 1000.0
    util: int = 50
    power_mw: int = 300_000
    sm_mhz: int = 1980
    temp: int = 40
    power_supported: bool = True
    #: the processes NVML lists on it; None: this NVML has no process API (the call raises)
    processes: list[FakeProcess] | None = field(default_factory=list)

    def hold(self, pid: int, mib: float) -> None:
        """A process ``pid`` takes ``mib`` more of this GPU's memory."""
        self.used_mib += mib
        assert self.processes is not None
        self.processes.append(FakeProcess(pid, int(mib * MIB)))

    def let_go(self, pid: int) -> None:
        """Process ``pid`` exits: its memory is free again."""
        assert self.processes is not None
        for p in [p for p in self.processes if p.pid == pid]:
            self.processes.remove(p)
            self.used_mib -= (p.usedGpuMemory or 0) / MIB


@dataclass
class Mem:
    total: int
    used: int
    free: int


@dataclass
class Util:
    gpu: int
    memory: int = 0


@dataclass
class FakeNvml:
    """The part of pynvml that tuner uses. ``fail_init`` makes ``nvmlInit`` raise like a missing library."""

    gpus: list[FakeGpu] = field(default_factory=lambda: [FakeGpu()])
    fail_init: bool = False
    driver: str = "580.159.04"
    cuda: int = 13000
    inits: int = 0
    shutdowns: int = 0
    process_reads: int = 0
    NVML_CLOCK_SM: int = 1
    NVML_TEMPERATURE_GPU: int = 0
    NVMLError: type[Exception] = NVMLError

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetName(self, h: FakeGpu) -> bytes:
        return h.name.encode()  # old pynvml returns bytes

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Mem:
        used = int(h.used_mib * MIB)
        return Mem(total=h.total_mib * MIB, used=used, free=h.total_mib * MIB - used)

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Util:
        return Util(gpu=h.util)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        if not h.power_supported:
            raise NVMLError_NotSupported("Not Supported")
        return h.power_mw

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, kind: int) -> int:
        assert kind == self.NVML_CLOCK_SM
        return h.sm_mhz

    def nvmlDeviceGetTemperature(self, h: FakeGpu, kind: int) -> int:
        assert kind == self.NVML_TEMPERATURE_GPU
        return h.temp

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[FakeProcess]:
        self.process_reads += 1
        if h.processes is None:
            raise NVMLError("Function Not Found")
        return list(h.processes)

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda
