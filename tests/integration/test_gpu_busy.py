"""A GPU filled by another process, noticed before the start (tuner.measure.gpufree) with a fake NVML
module injected into the real trial runner and simulator servers: the trial waits and then starts when the
memory is freed; when it is not freed in time the trial is given back (FAIL ``gpu_busy``, never ``oom``)
and queued again, in parallel (the other GPU goes on) and serial runs alike."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.fakes.fake_nvml import FakeGpu, FakeNvml, FakeProcess
from tests.studyfiles import write_study_file
from tuner.config.spec import FlagValue, StudySpec, load_spec
from tuner.measure.gpufree import GpuBusy
from tuner.measure.result import TrialResult
from tuner.measure.trial import run_trial
from tuner.progress import FinishedTrial, NullReporter, Reporter
from tuner.report.trials import trial_rows
from tuner.search import record
from tuner.search.loop import run_study
from tuner.server.failures import GPU_BUSY, OOM

pytestmark = pytest.mark.timeout(300)

SIM = [sys.executable, "-m", "tuner.sim", "--sim-hardware", "cpu-2core", "--sim-time-scale", "0.02"]
FOREIGN = 4242


def _study(tiny_model: Path, tmp_path: Path, name: str, n_trials: int, wait_s: float) -> StudySpec:
    study = {
        "name": name,
        "model": str(tiny_model),
        "server": {"command": [*SIM, "--sim-startup-s", "20"], "args": {"max-model-len": 2048}},
        "search": {"max-num-seqs": {"low": 2, "high": 32, "log": True}},
        "workload": {
            "input_tokens": 64,
            "output_tokens": 16,
            "requests": 8,
            "warmup_requests": 0,
            "capacity": {"levels": [1, 4]},
        },
        "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 200},
        "objectives": ["maximize output_throughput"],
        "baseline": {"gpu-memory-utilization": 0.9},
        "resources": {"gpu_wait_s": wait_s},
        "n_trials": n_trials,
        "seed": 3,
    }
    return load_spec(write_study_file(tmp_path, study))


def _host() -> FakeNvml:
    """Two H200s; a process that is not tuner's holds 70 GiB of GPU 1."""
    busy = FakeGpu(uuid="GPU-b", used_mib=0)
    busy.hold(FOREIGN, 70 * 1024)
    return FakeNvml(gpus=[FakeGpu(uuid="GPU-a", used_mib=0), busy])


class _FreedAfter(FakeNvml):
    """The foreign process exits after ``reads`` looks at the processes."""

    def __init__(self, reads: int) -> None:
        super().__init__(gpus=_host().gpus)
        self.reads = reads

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[FakeProcess]:
        if self.process_reads >= self.reads:
            h.let_go(FOREIGN)
        return super().nvmlDeviceGetComputeRunningProcesses(h)


class _Phases(NullReporter):
    def __init__(self) -> None:
        self.phases: list[tuple[str, str]] = []
        self.messages: list[str] = []

    def phase(self, name: str, detail: str = "") -> None:
        self.phases.append((name, detail))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def trial_finished(self, number: int, status: str, finished: FinishedTrial) -> None:
        pass


class _OnFakeHost:
    """The real trial function, reading the fake NVML."""

    def __init__(self, nvml: FakeNvml) -> None:
        self.nvml = nvml

    def __call__(
        self,
        spec: StudySpec,
        params: Mapping[str, FlagValue],
        *,
        log_dir: Path,
        runtime_dir: Path,
        reporter: Reporter = NullReporter(),  # noqa: B008
        best_so_far: float | None = None,
    ) -> TrialResult:
        return run_trial(
            spec,
            params,
            log_dir=log_dir,
            runtime_dir=runtime_dir,
            reporter=reporter,
            best_so_far=best_so_far,
            nvml=self.nvml,
        )


def _on_gpu(spec: StudySpec, gpu: str) -> StudySpec:
    server = spec.server.model_copy(update={"env": {"CUDA_VISIBLE_DEVICES": gpu}})
    return spec.model_copy(update={"server": server})


@pytest.mark.slow
def test_the_trial_waits_then_starts_when_the_memory_is_freed(tiny_model: Path, tmp_path: Path) -> None:
    spec = _on_gpu(_study(tiny_model, tmp_path, "wait", 1, wait_s=30), "1")
    nvml = _FreedAfter(reads=3)
    rep = _Phases()
    result = run_trial(
        spec,
        {"max-num-seqs": 4},
        log_dir=tmp_path / "t",
        runtime_dir=tmp_path / "rt",
        reporter=rep,
        nvml=nvml,
    )
    assert result.status == "ok", result.message
    names = [n for n, _ in rep.phases]
    assert "waiting for GPU memory" in names
    assert names.index("waiting for GPU memory") < names.index("starting server")
    waits = [d for n, d in rep.phases if n == "waiting for GPU memory"]
    # one line, said again only when its reason changes (the fake lets the process go between the memory
    # read and the process read, as a process that exits does: one look sees memory no process holds)
    assert len(waits) <= 2
    assert waits[0].startswith(f"GPU 1 has 70.0 GiB in use by pid {FOREIGN} (not tuner's)")
    assert nvml.process_reads >= 3


def test_serial_trial_given_back_as_gpu_busy_not_oom(tiny_model: Path, tmp_path: Path) -> None:
    spec = _on_gpu(_study(tiny_model, tmp_path, "busy1", 2, wait_s=0.5), "1")
    with pytest.raises(GpuBusy, match=f"pid {FOREIGN} \\(not tuner's\\)"):
        run_study(spec, trial_fn=_OnFakeHost(_host()), handle_signals=False, runtime_dir=tmp_path / "rt")
    study = optuna.load_study(study_name="busy1", storage=f"sqlite:///{tmp_path / 'busy1.db'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # given back, queued again
    given_back = trials[0].user_attrs
    assert (
        given_back[record.ATTR_FAILURE] == GPU_BUSY
        and "needs 126.4 GiB free" in given_back[record.ATTR_MESSAGE]
    )
    assert trials[1].user_attrs[record.ATTR_REQUEUED_FROM] == 0
    assert trial_rows(study)[0]["status"] == GPU_BUSY  # `tuner trials` names it


@pytest.mark.slow
def test_parallel_full_gpu_set_aside_trial_queued_again_others_go_on(
    tiny_model: Path, tmp_path: Path
) -> None:
    spec = _study(tiny_model, tmp_path, "busy2", 3, wait_s=1)
    rep = _Phases()
    outcome = run_study(
        spec,
        trial_fn=_OnFakeHost(_host()),
        reporter=rep,
        handle_signals=False,
        gpus=("0", "1"),
        runtime_dir=tmp_path / "rt",
        log_root=tmp_path / "runs",
    )
    assert outcome.stopped == "budget" and outcome.complete == 3
    trials = optuna.load_study(study_name="busy2", storage=outcome.storage_url).get_trials()
    busy = [t for t in trials if t.user_attrs.get(record.ATTR_FAILURE) == GPU_BUSY]
    assert busy and all(t.state == TrialState.FAIL for t in busy)
    for t in busy:
        assert f"pid {FOREIGN} (not tuner's)" in t.user_attrs[record.ATTR_MESSAGE]
        again = [u for u in trials if u.user_attrs.get(record.ATTR_REQUEUED_FROM) == t.number]
        assert again  # its params queued again
    finished = [t for t in trials if t.state in record.FINISHED_STATES]
    assert len(finished) == 3
    for t in finished:  # measured on the free GPU; no configuration blamed for the full one
        worker: Any = t.user_attrs.get(record.ATTR_WORKER)
        assert tuple(worker["gpus"]) == ("0",)
        assert t.user_attrs.get(record.ATTR_STATUS) == "ok"
    assert not [
        t
        for t in trials
        if OOM in (t.user_attrs.get(record.ATTR_STATUS), t.user_attrs.get(record.ATTR_FAILURE))
    ]
    said = [m for m in rep.messages if "given back (gpu_busy)" in m]
    assert said and "GPU 1 set aside for 1 s" in said[0]
