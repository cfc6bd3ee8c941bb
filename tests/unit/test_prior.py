"""The simulator's warm start and per-trial predictions (tuner.search.prior, tuner.sim.predict)."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from tuner.config.space import distributions
from tuner.config.spec import StudySpec, spec_from_dict
from tuner.search.prior import (
    ATTR_SIM_REFIT,
    PriorUnavailable,
    _params_of,
    measured_metrics,
    observations,
    prediction_errors,
    prediction_refit_n,
    refit_study,
    refit_summary,
    sim_target,
    simulated_study,
    store_prediction,
    stored_prediction,
    top_distinct,
    warm_start,
    warm_start_rank,
)
from tuner.search.record import ATTR_RESULT, ATTR_RUN_PARAMS, ATTR_STATUS
from tuner.search.study import queue_baseline
from tuner.sim.engine import SimWorkload, simulate
from tuner.sim.hardware import get_hardware, hardware_for_gpu
from tuner.sim.predict import PREDICTED_METRICS, Prediction, perturbed
from tuner.sim.refit import apply, describe

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def _spec(**over: Any) -> StudySpec:
    d: dict[str, Any] = {
        "name": "p",
        "model": LLAMA,
        "server": {"args": {"max-model-len": 4096}},
        "search": {
            "max-num-seqs": {"choices": [8, 64, 256]},
            "max-num-batched-tokens": {"choices": [512, 8192]},
        },
        "workload": {
            "input_tokens": 512,
            "output_tokens": 64,
            "requests": 64,
            "capacity": {"levels": [1, 8, 64]},
        },
        "slo": {"ttft_p99_ms": 1000, "itl_p99_ms": 50},
        "prior": {"sim": True, "trials": 8, "top": 3, "hardware": "H100"},
        "seed": 3,
    }
    d.update(over)
    return spec_from_dict(d)


def _p(tput: float, feasible: bool = True) -> Prediction:
    return Prediction(feasible=feasible, metrics={"output_throughput": tput})


def test_top_distinct_takes_the_best_feasible_once_and_never_an_excluded_one() -> None:
    results = [
        ({"a": 1}, _p(100)),
        ({"a": 2}, _p(300)),
        ({"a": 2}, _p(300)),  # the same configuration twice
        ({"a": 3}, _p(900, feasible=False)),
        ({"a": 4}, _p(200)),
        ({"a": 5}, _p(250)),
    ]
    got = top_distinct(results, 2, metric="output_throughput", direction="maximize", exclude=[{"a": 5}])
    assert [p for p, _ in got] == [{"a": 2}, {"a": 4}]
    low = top_distinct(results, 1, metric="output_throughput", direction="minimize")
    assert [p for p, _ in low] == [{"a": 1}]


def test_top_distinct_spreads_over_ties() -> None:
    results = [({"a": 1, "b": 1}, _p(100)), ({"a": 1, "b": 2}, _p(100)), ({"a": 2, "b": 2}, _p(100))]
    got = top_distinct(results, 2, metric="output_throughput", direction="maximize")
    assert [p for p, _ in got] == [{"a": 1, "b": 1}, {"a": 2, "b": 2}]  # not the one differing in one flag


def test_warm_start_queues_exactly_the_simulators_top_distinct_after_the_baseline() -> None:
    spec = _spec()
    study = optuna.create_study(directions=["maximize", "minimize"])
    queue_baseline(study, spec)
    notes = warm_start(study, spec)
    assert len(notes) == 1 and "queued 3 configuration(s)" in notes[0], notes
    target = sim_target(spec)
    results = simulated_study(
        {k: CategoricalDistribution(v.choices) for k, v in spec.search.items()},  # type: ignore[union-attr,arg-type]
        target.predict,
        metric="output_throughput",
        direction="maximize",
        slo=spec.slo.limits(),
        n_trials=8,
        seed=3,
    )
    want = top_distinct(results, 3, metric="output_throughput", direction="maximize")
    trials = study.get_trials(deepcopy=False)
    assert _params_of(trials[0]) == {}  # the baseline first
    assert [_params_of(t) for t in trials[1:]] == [p for p, _ in want]
    assert [warm_start_rank(t) for t in trials] == [None, 1, 2, 3]
    assert [stored_prediction(t) for t in trials[1:]] == [r for _, r in want]


def test_warm_start_never_queues_a_configuration_already_in_the_study() -> None:
    spec = _spec(prior={"sim": True, "trials": 8, "top": 6, "hardware": "H100"})
    study = optuna.create_study(directions=["maximize", "minimize"])
    warm_start(study, spec)
    first = [_params_of(t) for t in study.get_trials()]
    assert len({tuple(sorted(p.items())) for p in first}) == len(first)
    again = optuna.create_study(directions=["maximize", "minimize"])
    again.enqueue_trial(first[0])
    warm_start(again, spec)
    queued = [_params_of(t) for t in again.get_trials()]
    assert queued.count(first[0]) == 1


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"model": "acme/unknown-model"}, "does not know the model"),
        ({"prior": {"sim": True, "hardware": "TPU-v9"}}, "unknown hardware"),
        (
            {"workload": {"input_tokens": 64, "output_tokens": 8, "requests": 8, "sessions": {"turns": 2}}},
            "sessions",
        ),
    ],
)
def test_a_study_the_simulator_cannot_model_starts_the_usual_way(over: dict[str, Any], why: str) -> None:
    spec = _spec(**over)
    study = optuna.create_study(directions=["maximize", "minimize"])
    notes = warm_start(study, spec)
    assert len(notes) == 1 and why in notes[0] and "starts the usual way" in notes[0], notes
    assert "\n" not in notes[0]
    assert study.get_trials() == []
    with pytest.raises(PriorUnavailable):
        sim_target(spec)


def test_no_prior_key_no_warm_start() -> None:
    spec = _spec(prior=None)
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert warm_start(study, spec) == []
    assert study.get_trials() == []


def test_prediction_reads_back_and_errors_are_relative() -> None:
    p = sim_target(_spec()).predict({"max-num-seqs": 64, "max-num-batched-tokens": 8192})
    assert p.feasible and p.capacity > 0 and p.kv_tokens and p.metrics["ttft_p99"] > 0
    assert Prediction.from_dict(p.to_dict()) == p
    assert Prediction.from_dict({"metrics": {"x": "bad"}, "level": True}) == Prediction(feasible=False)
    refused = sim_target(_spec()).predict({"max-num-seqs": 64, "block-size": 17})
    assert not refused.feasible and refused.failure == "invalid_config"  # no attention backend takes it
    err = prediction_errors(_p(120), {"output_throughput": 100.0, "ttft_p99": 5.0})
    assert err == pytest.approx({"output_throughput": 0.2})


def test_a_wrong_simulator_predicts_otherwise() -> None:
    hw = get_hardware("H100")
    wrong = perturbed(hw, scale={"gemm": 0.7, "memory": 0.75}, reserve_gib=4)
    assert wrong.efficiency.gemm == pytest.approx(0.7 * hw.efficiency.gemm)
    assert wrong.reserve_bytes == hw.reserve_bytes + 4 * 1024**3
    with pytest.raises(KeyError):
        perturbed(hw, scale={"nope": 2.0})


@pytest.mark.parametrize(
    ("gpu", "profile"),
    [("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA L40S", "L40S"), ("Tesla T4", "T4")],
)
def test_nvml_names_map_to_profiles(gpu: str, profile: str) -> None:
    hw = hardware_for_gpu(gpu)
    assert hw is not None and hw.name == profile
    assert hardware_for_gpu("NVIDIA GeForce GTX 1080") is None


# ---- online refit (tuner.search.prior.refit_study, tuner.sim.refit) ------------------------------------------

MEASURED = [
    ({"max-num-seqs": 64, "max-num-batched-tokens": 8192}, 16),
    ({"max-num-seqs": 256, "max-num-batched-tokens": 512}, 32),
]


def _measured_study(spec: StudySpec, world_scale: float = 1.25) -> optuna.Study:
    """A study whose trials were "measured" on the simulator with the device constants x ``world_scale``,
    and one oom (not an observation)."""
    target = sim_target(spec)
    world = dataclasses.replace(target, hardware=apply(target.hardware, {"device": world_scale}))
    study = optuna.create_study(directions=["maximize", "minimize"])
    dists = distributions(spec)
    for params, conc in MEASURED:
        cfg = world.config(params)
        assert cfg is not None
        w = target.workload.with_(concurrency=conc, requests=2 * conc)
        summary = {**simulate(cfg, w).summary.to_dict(), "load": {"concurrency": conc, "requests": 2 * conc}}
        attrs = {ATTR_STATUS: "ok", ATTR_RUN_PARAMS: params, ATTR_RESULT: {"metrics": summary}}
        values = [summary["output_throughput_tok_s"], summary["ttft_ms"]["p99"]]
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, values=values, user_attrs=attrs)
        )
    params = {"max-num-seqs": 8, "max-num-batched-tokens": 512}
    oom = {ATTR_STATUS: "oom", ATTR_RUN_PARAMS: params}
    study.add_trial(
        optuna.trial.create_trial(params=params, distributions=dists, state=TrialState.PRUNED, user_attrs=oom)
    )
    return study


def test_measured_metrics_read_a_stored_summary_by_prediction_names() -> None:
    cfg = sim_target(_spec()).config({"max-num-seqs": 64})
    assert cfg is not None
    s = simulate(cfg, SimWorkload(input_tokens=64, output_tokens=8, requests=8, concurrency=4)).summary
    got = measured_metrics(s.to_dict())
    assert got["output_throughput"] == s.output_throughput_tok_s and got["ttft_p99"] == s.ttft_ms.p99
    assert set(got) <= set(PREDICTED_METRICS) and measured_metrics(None) == {}


def test_the_study_refits_the_simulator_and_later_predictions_use_it() -> None:
    spec = _spec(prior={"hardware": "H100"})  # predict and refit on by default, no warm start
    study = _measured_study(spec)
    assert [o.label for o in observations(study.get_trials(), sim_target(spec))] == [0, 1]  # not the oom
    assert refit_study(study, spec) is None
    stored = study.user_attrs[ATTR_SIM_REFIT]
    assert stored["n"] == 2 and stored["trials"] == [0, 1] and stored["scales"]["device"] > 1.05
    assert stored["loss_after"] < stored["loss_before"]
    assert refit_summary(study) == describe(stored) and "from 2 trials" in (refit_summary(study) or "")
    assert refit_study(study, spec) is None and study.user_attrs[ATTR_SIM_REFIT] == stored  # nothing new

    trial = study.ask()
    params = {"max-num-seqs": 64, "max-num-batched-tokens": 512}
    trial.set_user_attr(ATTR_RUN_PARAMS, params)
    store_prediction(trial, spec)
    frozen = study.get_trials()[-1]
    assert prediction_refit_n(frozen) == 2
    base = sim_target(spec).predict(params)
    pred = stored_prediction(frozen)
    assert pred is not None and pred.metrics["output_throughput"] > base.metrics["output_throughput"]


def test_refit_off_stores_nothing_and_predicts_with_the_profile() -> None:
    spec = _spec(prior={"hardware": "H100", "refit": False})
    study = _measured_study(spec)
    assert refit_study(study, spec) is None
    assert ATTR_SIM_REFIT not in study.user_attrs and refit_summary(study) is None
    trial = study.ask()
    trial.set_user_attr(ATTR_RUN_PARAMS, {"max-num-seqs": 64})
    store_prediction(trial, spec)
    assert prediction_refit_n(study.get_trials()[-1]) is None


class _BrokenStudy:
    """A storage that fails while the refit reads it."""

    def __init__(self) -> None:
        self.user_attrs: dict[str, Any] = {}

    def get_trials(self, **_: Any) -> list[Any]:
        raise RuntimeError("database is locked")


def test_a_failed_refit_is_one_line_never_an_exception() -> None:
    note = refit_study(_BrokenStudy(), _spec(prior={"hardware": "H100"}))  # type: ignore[arg-type]
    assert note == "simulator refit skipped: RuntimeError: database is locked"


def test_error_summary_of_a_real_study(tmp_path: Any) -> None:
    """The warm-started H200 study (results/h200/): every trial stored its prediction; the summary names
    the metrics asked for, with the absolute errors' median and max, and skips a metric nobody predicted."""
    import shutil
    from pathlib import Path

    from tuner.search.prior import error_summary

    db = tmp_path / "warm.db"
    shutil.copy(Path(__file__).resolve().parents[2] / "results/h200/h200-llama8b-warm.db", db)
    study = optuna.load_study(study_name="h200-llama8b-warm", storage=f"sqlite:///{db}")
    text = error_summary(study.get_trials(), ["output_throughput", "ttft_p99", "not_a_metric"])
    assert text is not None
    assert text.startswith("output_throughput median 10 %, max 12 % (7 trials); ttft_p99 median 4 %")
    assert "not_a_metric" not in text
    assert error_summary([], ["output_throughput"]) is None
