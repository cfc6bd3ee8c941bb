"""A whole ``tuner run`` with ``prior: {sim: true}`` against the simulated server (CPU profile): the
simulator's picks run right after the baseline, every trial stores a prediction beside its measurement, and
the study refits the simulator's constants to its trials (``sim_refit``), which later predictions use."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from tuner.cli.main import main as tuner_main
from tuner.config.paths import default_storage
from tuner.config.spec import load_spec
from tuner.search.prior import (
    ATTR_SIM_REFIT,
    prediction_refit_n,
    stored_prediction,
    trial_errors,
    warm_start_rank,
)
from tuner.search.record import read


@pytest.mark.slow
def test_warm_started_study_runs_end_to_end(tiny_model: Path, tmp_path: Path) -> None:
    study = {
        "name": "warm-e2e",
        "model": str(tiny_model),
        "server": {
            "command": ["python", "-m", "tuner.sim", "--sim-hardware", "cpu-2core", "--sim-time-scale", "0.02",
                        "--sim-startup-s", "0"],
            "args": {"max-model-len": 2048},
            "startup_timeout_s": 60,
        },
        "search": {"max-num-seqs": {"low": 2, "high": 32, "log": True}, "block-size": {"choices": [32, 64]}},
        "workload": {"input_tokens": 64, "output_tokens": 16, "requests": 16, "warmup_requests": 2,
                     "capacity": {"levels": [1, 4]}},
        "slo": {"ttft_p99_ms": 100, "itl_p99_ms": 20},
        "objectives": ["maximize output_throughput"],
        "baseline": {"gpu-memory-utilization": 0.3},
        "prior": {"sim": True, "trials": 6, "top": 2},
        "n_trials": 4,
        "seed": 1,
    }  # fmt: skip
    path = tmp_path / "warm-e2e.yaml"
    path.write_text(yaml.safe_dump(study))
    assert tuner_main(["run", str(path)]) == 0
    stored = optuna.load_study(study_name="warm-e2e", storage=default_storage(load_spec(path)))
    trials = stored.get_trials()
    done = [t for t in trials if read(t).finished]
    assert len(done) >= 4
    assert read(done[0]).is_baseline
    assert [warm_start_rank(t) for t in done[1:3]] == [1, 2]  # the simulator's picks next
    assert all(stored_prediction(t) is not None for t in done)  # predicted vs measured, every trial
    assert any(trial_errors(t) for t in done)
    refit = stored.user_attrs[ATTR_SIM_REFIT]  # the constants refit to the measured trials, stored
    assert refit["hardware"] == "cpu-2core" and refit["n"] >= 1 and set(refit["scales"]) >= {"device", "host"}
    assert prediction_refit_n(done[0]) == 0  # the baseline: predicted before any refit
    assert (prediction_refit_n(done[-1]) or 0) >= 1  # a later trial: predicted with the refit constants
