"""Environment facts: interpreter versions (a real subprocess), GPU via a fake NVML or a fake nvidia-smi."""

from __future__ import annotations

import importlib.util
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tuner.measure import envinfo
from tuner.measure.envinfo import clear_cache, cpu_model, environment, interpreter_versions, memory_total_mib

MIB = 1024 * 1024


class FakeNvml:
    """Just enough NVML for static facts: two GPUs, or an NVML that fails to start."""

    def __init__(self, names: tuple[str, ...] = ("NVIDIA H200",), fail: bool = False) -> None:
        self.names = names
        self.fail = fail

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h:04d}"

    def nvmlDeviceGetName(self, h: int) -> str:
        return self.names[h]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=143771 * MIB, used=0, free=143771 * MIB)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000


def _script(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_cache()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_interpreter_versions_of_this_python_and_cached() -> None:
    t0 = time.monotonic()
    v = interpreter_versions(sys.executable)
    assert v["python_version"] == sys.version.split()[0]
    if importlib.util.find_spec("vllm") is not None:
        assert v["vllm_version"] and v["vllm_version"][0].isdigit()
    if importlib.util.find_spec("torch") is not None:
        assert v["torch_version"] and v["torch_version"][0].isdigit()
    first = time.monotonic() - t0
    assert first < 10  # metadata, not an import of vLLM
    t1 = time.monotonic()
    assert interpreter_versions(sys.executable) == v
    assert time.monotonic() - t1 < 0.05


def test_missing_or_broken_interpreter_gives_none(tmp_path: Path) -> None:
    assert interpreter_versions(str(tmp_path / "no-such-python")) == {
        "vllm_version": None,
        "torch_version": None,
        "python_version": None,
    }
    bad = _script(tmp_path, "python", "echo 'not json'; exit 3\n")
    assert interpreter_versions(bad)["vllm_version"] is None


def test_gpu_from_nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment(str(tmp_path / "none"), nvml=FakeNvml(("NVIDIA H200", "NVIDIA H200")))
    assert env["hardware"] == "2 x NVIDIA H200"
    assert env["gpu"] == {
        "name": "NVIDIA H200",
        "count": 2,
        "memory_total_mib": 143771,
        "driver": "580.159.04",
        "cuda_driver": "13.0",
        "source": "nvml",
    }
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert environment(str(tmp_path / "none"), nvml=FakeNvml(("A", "B")))["hardware"] == "B"


def test_gpu_from_nvidia_smi_when_nvml_fails(tmp_path: Path) -> None:
    smi = _script(
        tmp_path,
        "nvidia-smi",
        'echo "GPU 0: NVIDIA L4 (UUID: GPU-1111-aaaa)"\necho "GPU 1: NVIDIA L4 (UUID: GPU-2222-bbbb)"\n',
    )
    env = environment(str(tmp_path / "none"), nvml=FakeNvml(fail=True), nvidia_smi=smi)
    assert env["hardware"] == "2 x NVIDIA L4"
    assert env["gpu"]["source"] == "nvidia-smi" and env["gpu"]["memory_total_mib"] is None


def test_cpu_only(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC   9654 96-Core Processor\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       131072000 kB\nMemFree: 1 kB\n")
    env = environment(
        str(tmp_path / "none"),
        nvml=FakeNvml(fail=True),
        nvidia_smi=str(tmp_path / "no-smi"),
        cpuinfo_path=str(cpuinfo),
        meminfo_path=str(meminfo),
    )
    assert env["gpu"] is None
    assert env["hardware"] == "AMD EPYC 9654 96-Core Processor"
    assert env["cpu"]["cores"] and env["cpu"]["cores"] >= 1
    assert env["memory_total_mib"] == 128000
    assert env["vllm_version"] is None


def test_cpu_model_fallbacks(tmp_path: Path) -> None:
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nCPU part\t: 0xd0c\nModel\t: Raspberry Pi 5\n")
    assert cpu_model(str(arm)) == "Raspberry Pi 5"
    assert cpu_model(str(tmp_path / "missing"))  # platform.processor() or machine()
    assert memory_total_mib(str(tmp_path / "missing")) is None


def test_this_machine_never_raises() -> None:
    env = environment()
    assert set(env) >= {"vllm_version", "torch_version", "hardware", "gpu", "cpu", "memory_total_mib"}
    assert env["hardware"]


def test_module_has_probe_constants() -> None:
    assert envinfo.PROBE_TIMEOUT_S > 0
