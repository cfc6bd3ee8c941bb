"""GpuSampler and the NVML probes, against a fake NVML module (no GPU needed)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.fakes.fake_nvml import FakeGpu, FakeNvml, FakeProcess, NVMLError
from tuner.measure.gpufree import GpuMemory, GpuProcess
from tuner.measure.telemetry import nvml as tn
from tuner.measure.telemetry.nvml import (
    GpuSampler,
    cuda_version_text,
    gpu_memory_state,
    gpu_memory_used_mib,
    parse_visible_devices,
    reset_unavailable_notice,
    static_facts,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _fresh_notice() -> None:
    reset_unavailable_notice()


def test_parse_visible_devices() -> None:
    uuids = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3"]
    assert parse_visible_devices(None, uuids) == [0, 1, 2]
    assert parse_visible_devices("all", uuids) == [0, 1, 2]
    assert parse_visible_devices("", uuids) == []
    assert parse_visible_devices("2,0", uuids) == [2, 0]
    assert parse_visible_devices("1,7,0", uuids) == [1]  # stops at the first invalid entry, as CUDA does
    assert parse_visible_devices("-1", uuids) == []
    assert parse_visible_devices("GPU-bbbb", uuids) == [1]
    assert parse_visible_devices("cccc-3, 0", uuids) == [2, 0]
    assert parse_visible_devices("GPU-", uuids) == []  # ambiguous prefix
    assert parse_visible_devices("0,0", uuids) == [0]


def test_cuda_version_text() -> None:
    assert cuda_version_text(13000) == "13.0"
    assert cuda_version_text(12040) == "12.4"


def test_sampler_summary_one_gpu() -> None:
    fake = FakeNvml()
    clock = FakeClock()
    s = GpuSampler(interval_s=3600, nvml=fake, visible_devices=None, clock=clock)
    with s:
        assert s.available
        g = fake.gpus[0]
        for used, util, t in ((2000.0, 80, 1.0), (3000.0, 100, 2.0)):
            g.used_mib, g.util, clock.t = used, util, t
            s.sample_once()
        g.used_mib, g.util, clock.t = 4000.0, 90, 3.0
    # readings: start (1000 MiB, 50 %), two by hand, one at stop (4000 MiB, 90 %)
    out = s.summary()
    assert out["available"] is True
    assert out["name"] == "NVIDIA H200" and out["count"] == 1 and out["memory_total_mib"] == 143771
    assert out["driver"] == "580.159.04" and out["cuda_driver"] == "13.0"
    assert out["samples"] == 4 and out["duration_s"] == 3.0
    assert out["util_pct"] == {"mean": 80.0, "max": 100.0}
    assert out["mem_used_mib"] == {"mean": 2500.0, "max": 4000.0}
    assert out["power_w"] == {"mean": 300.0, "max": 300.0}
    assert out["sm_clock_mhz"]["max"] == 1980.0 and out["temp_c"]["mean"] == 40.0
    assert "per_gpu" not in out
    assert fake.inits == 1 and fake.shutdowns == 1
    # a window
    assert s.summary(start=1.5, end=2.5)["util_pct"] == {"mean": 100.0, "max": 100.0}
    assert s.summary(start=10)["samples"] == 0


def test_sampler_thread_samples_about_every_interval() -> None:
    fake = FakeNvml()
    with GpuSampler(interval_s=0.02, nvml=fake, visible_devices="all") as s:
        deadline = time.monotonic() + 5
        while s.summary()["samples"] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert s.summary()["samples"] >= 5
    assert not any(t.name == "tuner-gpu-sampler" for t in threading.enumerate())


def test_several_gpus_per_gpu_and_visible_selection() -> None:
    fake = FakeNvml(
        gpus=[
            FakeGpu(uuid="GPU-a", util=10),
            FakeGpu(uuid="GPU-b", util=30, power_supported=False),
            FakeGpu(uuid="GPU-c", util=90),
        ]
    )
    with GpuSampler(interval_s=3600, nvml=fake, visible_devices="1,2") as s:
        pass
    out = s.summary()
    assert out["count"] == 2
    assert [g["index"] for g in out["per_gpu"]] == [1, 2]
    assert out["util_pct"] == {"mean": 60.0, "max": 90.0}
    assert out["per_gpu"][0]["util_pct"] == {"mean": 30.0, "max": 30.0}
    assert "power_w" not in out["per_gpu"][0]  # not supported there: left out, the rest goes on
    assert out["per_gpu"][1]["power_w"]["mean"] == 300.0


def test_visible_devices_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(gpus=[FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b", name="NVIDIA L4", total_mib=23034)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    facts = static_facts(fake)
    assert facts is not None
    assert facts["name"] == "NVIDIA L4" and facts["count"] == 1 and facts["memory_total_mib"] == 23034
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert static_facts(fake) is None


def test_unavailable_says_so_once_and_never_raises() -> None:
    said: list[str] = []
    for _ in range(3):
        with GpuSampler(nvml=FakeNvml(fail_init=True), on_unavailable=said.append) as s:
            s.sample_once()
        assert s.summary() == {"available": False, "reason": "NVML Shared Library Not Found"}
        assert not s.available
    assert said == ["NVML Shared Library Not Found"]


def test_no_gpu_selected_is_unavailable() -> None:
    fake = FakeNvml()
    said: list[str] = []
    with GpuSampler(nvml=fake, visible_devices="", on_unavailable=said.append) as s:
        pass
    assert s.summary()["available"] is False
    assert "CUDA_VISIBLE_DEVICES" in s.summary()["reason"]
    assert fake.inits == fake.shutdowns == 1  # opened, then closed again


def test_a_raising_notice_callback_is_swallowed() -> None:
    def boom(_: str) -> None:
        raise RuntimeError("logger broke")

    with GpuSampler(nvml=FakeNvml(fail_init=True), on_unavailable=boom) as s:
        pass
    assert s.summary()["available"] is False


def test_default_pynvml_without_a_driver_is_unavailable() -> None:
    # this machine (and CI) has pynvml but no NVIDIA driver; on a GPU host the summary is available
    with GpuSampler(interval_s=0.05, on_unavailable=lambda _: None) as s:
        time.sleep(0.1)
    out = s.summary()
    assert isinstance(out["available"], bool)
    if not out["available"]:
        assert out["reason"]
        assert gpu_memory_used_mib() is None


def test_gpu_memory_used_mib() -> None:
    fake = FakeNvml(gpus=[FakeGpu(used_mib=1500), FakeGpu(uuid="GPU-b", used_mib=250.5)])
    assert gpu_memory_used_mib(fake, visible_devices="all") == [1500, 250]
    assert gpu_memory_used_mib(FakeNvml(fail_init=True)) is None
    assert fake.inits == fake.shutdowns == 1


def test_gpu_memory_state_memory_and_processes_in_visible_order() -> None:
    busy = FakeGpu(uuid="GPU-b", total_mib=81559, used_mib=500)
    busy.hold(4242, 70_000)
    busy.processes = [*(busy.processes or []), FakeProcess(77)]  # NVML does not say how much
    fake = FakeNvml(gpus=[FakeGpu(uuid="GPU-a", used_mib=0), busy, FakeGpu(uuid="GPU-c", processes=None)])
    state = gpu_memory_state(fake, visible_devices="1,0,2")
    assert state == [
        GpuMemory(1, 81559, 70500, 11059, (GpuProcess(4242, 70000), GpuProcess(77, None))),
        GpuMemory(0, 143771, 0, 143771, ()),
        GpuMemory(2, 143771, 1000, 142771, None),  # no process API: None, not "no process"
    ]
    assert fake.inits == fake.shutdowns == 1
    busy.let_go(4242)
    after = gpu_memory_state(fake, visible_devices="1")
    assert after is not None and after[0].used_mib == 500 and after[0].processes == (GpuProcess(77, None),)


def test_gpu_memory_state_without_nvml_is_none() -> None:
    assert gpu_memory_state(FakeNvml(fail_init=True)) is None
    assert gpu_memory_state(FakeNvml(), visible_devices="") is None


def test_a_broken_reading_is_skipped() -> None:
    class Flaky(FakeNvml):
        def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
            raise NVMLError("GPU is lost")

    with GpuSampler(interval_s=3600, nvml=Flaky(), visible_devices=None) as s:
        pass
    out = s.summary()
    assert out["available"] and "util_pct" not in out and out["mem_used_mib"]["mean"] == 1000.0


def test_bad_interval_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        GpuSampler(interval_s=0)


def test_module_constants() -> None:
    assert tn.SIGNALS == ("util_pct", "mem_used_mib", "power_w", "sm_clock_mhz", "temp_c")
