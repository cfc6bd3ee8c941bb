"""Parallel trials (``tuner run --gpus``) against the simulator server, with four fake GPUs on this machine's
CPUs: no two running trials share a GPU, the trials run at the same time (measured), a crash in one slot
leaves the others running, a size the host cannot hold is refused before launch; kill -9 of the parent then
``tuner resume`` loses nothing and leaves no server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tuner.config.spec import FlagValue, StudySpec, load_spec
from tuner.measure.result import TrialResult
from tuner.progress import NullReporter, Reporter
from tuner.search import record
from tuner.search.loop import run_study
from tuner.server.procs import process_group_members, read_pidfiles

pytestmark = pytest.mark.timeout(300)

GPUS = ("0", "1", "2", "3")
SIM = [sys.executable, "-m", "tuner.sim", "--sim-hardware", "cpu-2core", "--sim-time-scale", "0.02"]


def _study(tiny_model: Path, tmp_path: Path, name: str, n_trials: int) -> Path:
    study = {
        "name": name,
        "model": str(tiny_model),
        "server": {
            "command": [*SIM, "--sim-startup-s", "20"],  # 0.4 s of simulated start-up at this scale
            "args": {"max-model-len": 2048},
            "startup_timeout_s": 90,
        },
        "search": {
            "max-num-seqs": {"low": 2, "high": 32, "log": True},
            "tensor-parallel-size": {"choices": [1, 2, 8]},  # 8: more GPUs than the host has
        },
        "workload": {
            "input_tokens": 64,
            "output_tokens": 16,
            "requests": 16,
            "warmup_requests": 2,
            "capacity": {"levels": [1, 4]},
        },
        "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 200},
        "objectives": ["maximize output_throughput"],
        "baseline": {"gpu-memory-utilization": 0.3},
        "n_trials": n_trials,
        "seed": 3,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


_QUIET = NullReporter()


class _Recorder:
    """Wraps the real trial function: records each trial's GPUs and its start and end; the trial whose
    number is ``crash`` gets a server that exits at once (a real crash, through the real trial runner)."""

    def __init__(self, crash: int | None) -> None:
        self.crash = crash
        self.lock = threading.Lock()
        self.spans: list[tuple[int, tuple[str, ...], float, float, str]] = []

    def __call__(
        self,
        spec: StudySpec,
        params: Mapping[str, FlagValue],
        *,
        log_dir: Path,
        runtime_dir: Path,
        reporter: Reporter = _QUIET,
        best_so_far: float | None = None,
    ) -> TrialResult:
        from tuner.measure.trial import run_trial

        number = int(log_dir.name.removeprefix("trial-"))
        gpus = tuple(spec.server.env["CUDA_VISIBLE_DEVICES"].split(","))
        if number == self.crash:
            server = spec.server.model_copy(
                update={"command": [sys.executable, "-c", "import sys; sys.exit(3)"]}
            )
            spec = spec.model_copy(update={"server": server})
        start = time.monotonic()
        result = run_trial(
            spec, params, log_dir=log_dir, runtime_dir=runtime_dir, reporter=reporter, best_so_far=best_so_far
        )
        with self.lock:
            self.spans.append((number, gpus, start, time.monotonic(), result.status))
        return result


def _max_overlap(spans: list[tuple[int, tuple[str, ...], float, float, str]]) -> int:
    events = sorted([(s[2], 1) for s in spans] + [(s[3], -1) for s in spans])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


@pytest.mark.slow
def test_four_slots_disjoint_concurrent_and_a_crash_contained(tiny_model: Path, tmp_path: Path) -> None:
    path = _study(tiny_model, tmp_path, "par", 9)
    spec = load_spec(path)
    rec = _Recorder(crash=2)
    outcome = run_study(
        spec,
        trial_fn=rec,
        handle_signals=False,
        gpus=GPUS,
        runtime_dir=tmp_path / "rt",
        log_root=tmp_path / "runs",
    )
    assert outcome.stopped == "budget" and outcome.complete == 9
    spans = rec.spans
    for a in spans:  # no two trials that ran at the same time shared a GPU
        for b in spans:
            if a[0] < b[0] and a[2] < b[3] and b[2] < a[3]:
                assert not set(a[1]) & set(b[1]), (a, b)
    assert _max_overlap(spans) >= 3, spans  # the slots ran concurrently (measured)
    by_number = {s[0]: s for s in spans}
    assert by_number[2][4] != "ok"  # the crashed slot
    crash_end = by_number[2][3]
    others = [s for s in spans if s[0] != 2 and s[2] < crash_end < s[3]]
    assert others and all(s[4] == "ok" for s in others)  # running beside the crash, and unharmed
    trials = optuna.load_study(study_name="par", storage=outcome.storage_url).get_trials()
    finished = [t for t in trials if t.state in record.FINISHED_STATES]
    assert len(finished) == 9
    refused = [t for t in finished if t.params.get("tensor-parallel-size") == 8]
    for t in refused:  # known before launch: no server, no span
        assert t.number not in by_number
    for t in finished:
        worker = t.user_attrs.get(record.ATTR_WORKER)
        if t.number in by_number:
            assert isinstance(worker, dict) and tuple(worker["gpus"]) == by_number[t.number][1]
    assert not [r for _, r in read_pidfiles(tmp_path / "rt") if process_group_members(int(r["pgid"]))]


@pytest.mark.slow
def test_kill_9_of_the_parent_then_resume_loses_nothing(tiny_model: Path, tmp_path: Path) -> None:
    path = _study(tiny_model, tmp_path, "par-kill", 6)
    rt = tmp_path / "rt"
    env = {**os.environ, "TUNER_RUNTIME_DIR": str(rt)}
    cmd = [sys.executable, "-m", "tuner", "run", str(path), "--gpus", "0,1,2,3"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    live: list[int] = []
    while time.monotonic() < deadline and len(live) < 2:
        live = [int(r["pgid"]) for _, r in read_pidfiles(rt) if process_group_members(int(r["pgid"]))]
        time.sleep(0.1)
    assert len(live) >= 2, "two servers did not run at once"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    spec = load_spec(path)
    outcome = run_study(spec, handle_signals=False, must_exist=True, gpus=GPUS, runtime_dir=rt)
    assert outcome.complete == 6 and len(outcome.repaired) >= 2
    trials = optuna.load_study(study_name="par-kill", storage=outcome.storage_url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for n in outcome.repaired:  # each repaired trial's params were measured after all
        lost = trials[n]
        again = [t for t in trials if t.user_attrs.get(record.ATTR_REQUEUED_FROM) == n]
        assert lost.user_attrs.get(record.ATTR_INTERRUPTED) and again
    assert not [g for g in live if process_group_members(g)]
    assert not [r for _, r in read_pidfiles(rt) if process_group_members(int(r["pgid"]))]


def test_bad_gpus_is_one_line_and_exit_2(tiny_model: Path, tmp_path: Path, capsys: Any) -> None:
    from tuner.cli.main import main as tuner_main

    path = _study(tiny_model, tmp_path, "par-bad", 2)
    assert tuner_main(["run", str(path), "--gpus", "0,0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "named twice" in err[0]
    assert not (tmp_path / "par-bad.db").exists()
