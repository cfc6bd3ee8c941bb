"""The study loop with an injected fake trial function (no vLLM): budget, baseline, rules, failures,
interruption, timeout, and the stored database as plain Optuna."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.fakes.trial_fn import Fake, synthetic
from tests.studyfiles import write_study_file
from tuner.config.argv import trial_flags
from tuner.config.paths import default_storage
from tuner.config.spec import StudySpec, load_spec
from tuner.errors import Interrupted, UsageError
from tuner.measure.result import TrialResult
from tuner.search.loop import run_study

SEARCH = {
    "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
    "max-num-seqs": {"low": 2, "high": 64, "log": True},
    "block-size": {"choices": [32, 64]},
}


def write_spec(tmp_path: Path, **extra: Any) -> StudySpec:
    data: dict[str, Any] = {
        "name": "fake",
        "model": "./m",
        "server": {"args": {"max-model-len": 2048}},
        "search": SEARCH,
        "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
        "slo": {"ttft_p99_ms": 2000},
        "n_trials": 6,
    }
    data.update(extra)
    return load_spec(write_study_file(tmp_path, data))


def load(spec: StudySpec) -> optuna.Study:
    return optuna.load_study(study_name=spec.name, storage=default_storage(spec))


def test_runs_to_budget_with_baseline_first(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    fake = Fake()
    out = run_study(spec, trial_fn=fake)
    assert out.complete == 6 and out.told == 6 and out.stopped == "budget"
    study = load(spec)  # plain Optuna opens it
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert trials[0].params == {} and trials[0].user_attrs["is_baseline"] is True
    assert fake.calls[0] == {}
    assert all(t.user_attrs["is_baseline"] is False and set(t.params) == set(SEARCH) for t in trials[1:])
    t = trials[1]
    for key in (
        "argv",
        "status",
        "message",
        "log_path",
        "vllm_version",
        "hardware",
        "started_at",
        "ended_at",
    ):
        assert key in t.user_attrs
    assert t.user_attrs["worker"]["pid"] == os.getpid()
    assert t.user_attrs["result"]["metrics"]["output_throughput_tok_s"] > 0
    # Optuna's per-constraint keys and (merged by Optuna, by index) the list optuna-dashboard reads
    assert set(t.constraints) == {"ttft_p99", "failed", "0", "1"}
    assert t.system_attrs["constraints"] == [t.constraints["ttft_p99"], 0.0]
    assert t.user_attrs["slo_verdict"] in ("pass", "fail") and t.user_attrs["p99_ttft_ms"] > 0
    assert study.metric_names == ["output_throughput", "ttft_p99"]
    assert study.user_attrs["n_trials"] == 6
    assert study.user_attrs["metric_names"] == ["output_throughput", "ttft_p99"]
    assert study.user_attrs["spec"]["name"] == "fake"
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_baseline_as_mapping_pins_flags_without_optuna_params(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, baseline={"gpu-memory-utilization": 0.3}, n_trials=2)
    fake = Fake()
    run_study(spec, trial_fn=fake)
    base = load(spec).trials[0]
    assert base.params == {}
    assert base.user_attrs["baseline_flags"] == {"gpu-memory-utilization": 0.3}
    assert fake.calls[0] == {"gpu-memory-utilization": 0.3}


def test_no_baseline(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, baseline=False, n_trials=2)
    run_study(spec, trial_fn=Fake())
    assert all(t.params for t in load(spec).trials)


def test_rule_refused_trials_cost_no_call(tmp_path: Path) -> None:
    search = {"max-num-seqs": {"low": 16, "high": 64}, "max-num-batched-tokens": {"low": 8, "high": 64}}
    spec = write_spec(tmp_path, search=search, n_trials=12, baseline=False, sampler="random")
    fake = Fake()
    run_study(spec, trial_fn=fake)
    trials = load(spec).trials
    refused = [t for t in trials if t.user_attrs["status"] == "infeasible"]
    assert refused, "the random sampler should hit max-num-batched-tokens < max-num-seqs"
    for t in refused:
        assert t.params["max-num-batched-tokens"] < t.params["max-num-seqs"]
        assert t.state == TrialState.PRUNED and t.constraints["failed"] == 1.0 and t.values is None
        assert t.user_attrs["launched"] is False and "max-num-seqs" in t.user_attrs["message"]
    assert len(fake.calls) == len(trials) - len(refused)
    assert all(c["max-num-batched-tokens"] >= c["max-num-seqs"] for c in fake.calls)


@pytest.mark.parametrize("status", ["oom", "invalid_config", "startup_timeout", "crashed", "load_errors"])
def test_failures_are_told_infeasible_and_kept(tmp_path: Path, status: str) -> None:
    def fail_second(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        if i == 1:
            return TrialResult(status=status, message=f"fake {status}", log_tail=["line 1", "line 2"])
        return None

    spec = write_spec(tmp_path, n_trials=3)
    run_study(spec, trial_fn=Fake(fail_second))
    study = load(spec)
    t = study.trials[1]
    assert t.state == TrialState.PRUNED and t.values is None  # no made-up values (tuner.search.tell)
    assert t.user_attrs["status"] == status and t.user_attrs["failure"] == status
    assert t.user_attrs["message"] == f"fake {status}" and t.user_attrs["log_tail"] == ["line 1", "line 2"]
    assert t.user_attrs["feasible"] is False and t.constraints["failed"] == 1.0
    assert "slo_verdict" not in t.user_attrs
    assert t.number not in {b.number for b in study.best_trials}


@pytest.mark.parametrize("sampler", ["gp", "nsga2"])
def test_samplers_that_read_only_complete_trials_get_penalty_values(tmp_path: Path, sampler: str) -> None:
    def fail_second(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        return TrialResult(status="oom", message="fake oom") if i == 1 else None

    spec = write_spec(tmp_path, n_trials=3, sampler=sampler)
    run_study(spec, trial_fn=Fake(fail_second))
    t = load(spec).trials[1]
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "oom"
    assert t.values is not None and all(math.isfinite(v) for v in t.values) and t.constraints["failed"] == 1.0


def test_budget_is_stored_and_raised(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=3)
    run_study(spec, trial_fn=Fake(), n_trials=2)
    assert load(spec).user_attrs["n_trials"] == 2
    again = run_study(spec, trial_fn=Fake())  # stored budget, not the file's 3
    assert again.told == 0 and again.complete == 2
    more = run_study(spec, trial_fn=Fake(), n_trials=4)
    assert more.told == 2 and more.complete == 4


def test_timeout_stops_before_a_trial_that_would_not_fit(tmp_path: Path) -> None:
    def slow(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        time.sleep(0.4)
        return None

    spec = write_spec(tmp_path, n_trials=50)
    out = run_study(spec, trial_fn=Fake(slow), timeout_s=1.0)
    assert out.stopped == "timeout"
    assert 1 <= out.told <= 3


def test_keyboard_interrupt_marks_requeues_and_resumes(tmp_path: Path) -> None:
    def interrupt_third(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        if i == 2:
            raise KeyboardInterrupt
        return None

    spec = write_spec(tmp_path, n_trials=5)
    first = Fake(interrupt_third)
    with pytest.raises(Interrupted) as info:
        run_study(spec, trial_fn=first)
    assert info.value.exit_code == 130
    study = load(spec)
    lost = study.trials[2]
    assert lost.state == TrialState.FAIL and lost.user_attrs["interrupted"] is True
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == first.calls[2]

    second = Fake()
    out = run_study(spec, trial_fn=second, must_exist=True)
    assert out.complete == 5
    assert second.calls[0] == first.calls[2]  # the interrupted params run first
    trials = load(spec).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == len(set(finished))


def test_real_sigint_reaches_the_trial(tmp_path: Path) -> None:
    def sigint(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        if i == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises KeyboardInterrupt here
            raise AssertionError("SIGINT did not interrupt the trial")
        return None

    spec = write_spec(tmp_path, n_trials=3)
    with pytest.raises(Interrupted):
        run_study(spec, trial_fn=Fake(sigint))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    states = [t.state for t in load(spec).trials]
    assert states[:2] == [TrialState.COMPLETE, TrialState.FAIL] and TrialState.RUNNING not in states


def test_unexpected_error_gives_the_trial_back(tmp_path: Path) -> None:
    def bug(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        if i == 1:
            raise RuntimeError("bug in the runner")
        return None

    spec = write_spec(tmp_path, n_trials=3)
    with pytest.raises(RuntimeError, match="bug in the runner"):
        run_study(spec, trial_fn=Fake(bug))
    trials = load(spec).trials
    assert trials[1].state == TrialState.FAIL and "bug in the runner" in trials[1].user_attrs["error"]
    assert [t.state for t in trials[2:]] == [TrialState.WAITING]


def test_existing_study_with_other_objectives_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=1)
    run_study(spec, trial_fn=Fake())
    other = write_spec(tmp_path, n_trials=1, objectives=["maximize output_throughput", "minimize itl_p99"])
    with pytest.raises(UsageError, match="new name"):
        run_study(other, trial_fn=Fake())


def test_resume_needs_an_existing_study(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    with pytest.raises(UsageError, match="tuner run"):
        run_study(spec, trial_fn=Fake(), must_exist=True)
    assert not (tmp_path / "fake.db").exists()


def test_heartbeat_and_progress_lines(tmp_path: Path) -> None:
    import io

    from tuner.cli.progress_rich import RichReporter

    def slow(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        time.sleep(0.6)
        return None

    spec = write_spec(tmp_path, n_trials=2)
    buf = io.StringIO()
    with RichReporter(file=buf) as reporter:
        run_study(spec, trial_fn=Fake(slow), reporter=reporter, heartbeat_s=0.1)
    for t in load(spec).trials:
        assert t.user_attrs["heartbeat_at"] > t.datetime_start.timestamp() + 0.1  # type: ignore[union-attr]
    lines = buf.getvalue().splitlines()
    assert [line.split(" in ")[0] for line in lines] == ["trial 0 ok", "trial 1 ok"]
    assert "best so far: " in lines[-1]


# ------------------------------------------------------------------------------- compile keys of trials


@pytest.fixture(autouse=True)
def _private_vllm_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every study here gets its own vLLM cache folder (the loop writes a marker there), never ~/.cache."""
    folder = tmp_path / "vllm-cache"
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(folder))
    monkeypatch.delenv("VLLM_DISABLE_COMPILE_CACHE", raising=False)
    return folder


def started(params: Mapping[str, Any], startup_s: float = 1.5) -> TrialResult:
    """A measurement whose server became healthy after ``startup_s``."""
    result = synthetic(params)
    result.startup_s = startup_s
    return result


def healthy_fake(i: int, params: Mapping[str, Any]) -> TrialResult | None:
    return started(params, 1.0 + i % 3)


def expected_cached(trials: list[optuna.trial.FrozenTrial]) -> list[bool]:
    """The rule: a key is cached once an earlier COMPLETE trial started a healthy server with it in the
    same cache."""
    seen: set[tuple[str, str]] = set()
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        rec = t.user_attrs["compile_key"]
        out.append((rec["key"], rec["cache"]) in seen)
        startup = t.user_attrs["result"].get("startup_s")
        if t.state == TrialState.COMPLETE and startup:
            seen.add((rec["key"], rec["cache"]))
    return out


def test_every_trial_records_its_compile_key(tmp_path: Path, _private_vllm_cache: Path) -> None:
    from tuner.search.restart_cost import MARKER, cache_identity, compile_key

    search = {"gpu-memory-utilization": {"low": 0.1, "high": 0.5}, "max-num-seqs": {"choices": [16, 32]}}
    spec = write_spec(tmp_path, search=search, n_trials=8)
    run_study(spec, trial_fn=Fake(healthy_fake))
    trials = load(spec).trials
    cache = cache_identity({"VLLM_CACHE_ROOT": str(_private_vllm_cache)})
    assert cache is not None and (_private_vllm_cache / MARKER).exists()
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        rec = t.user_attrs["compile_key"]
        assert set(rec) == {"key", "cache", "cached"}
        assert rec["key"] == compile_key(*trial_flags(spec, t.user_attrs["run_params"]))
        assert rec["cache"] == cache
    keys = [t.user_attrs["compile_key"]["key"] for t in trials]
    assert len(set(keys)) == 3  # vLLM's defaults, 16 and 32 (gpu-memory-utilization is not in the key)
    cached = [t.user_attrs["compile_key"]["cached"] for t in trials]
    assert cached == expected_cached(trials)
    assert cached[:2] == [False, False] and sum(cached) >= 8 - 3


def test_a_key_is_cached_only_after_a_healthy_start_in_the_same_cache(tmp_path: Path) -> None:
    # one compile key for every trial: the searched flag is neutral and the baseline's defaults match it
    search = {"gpu-memory-utilization": {"low": 0.1, "high": 0.5}}

    def crash_first(i: int, params: Mapping[str, Any]) -> TrialResult | None:
        if i == 0:
            return TrialResult(status="crashed", message="fake crash before /health")
        if i == 2:
            return started(params, 0.0)  # no healthy start recorded (startup 0)
        return started(params)

    spec = write_spec(tmp_path, search=search, n_trials=4)
    run_study(spec, trial_fn=Fake(crash_first))
    trials = load(spec).trials
    assert len({t.user_attrs["compile_key"]["key"] for t in trials}) == 1
    assert [t.user_attrs["compile_key"]["cached"] for t in trials] == [False, False, True, True]

    # the same study on another cache (another folder, as on a fresh machine): compiled again first
    other = tmp_path / "other-cache"
    server = {"args": {"max-model-len": 2048}, "env": {"VLLM_CACHE_ROOT": str(other)}}
    moved = write_spec(tmp_path, search=search, n_trials=4, server=server)
    out = run_study(moved, trial_fn=Fake(healthy_fake), n_trials=7, accept_changes=True)  # server.env changed
    assert out.told == 3
    trials = load(spec).trials
    caches = [t.user_attrs["compile_key"]["cache"] for t in trials]
    assert caches[4] != caches[0] and len(set(caches[:4])) == 1 and len(set(caches[4:])) == 1
    assert [t.user_attrs["compile_key"]["cached"] for t in trials[4:]] == [False, True, True]
    assert [t.user_attrs["compile_key"]["cached"] for t in trials] == expected_cached(trials)


def test_a_disabled_compile_cache_caches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_DISABLE_COMPILE_CACHE", "1")
    spec = write_spec(tmp_path, search={"gpu-memory-utilization": {"low": 0.1, "high": 0.5}}, n_trials=4)
    run_study(spec, trial_fn=Fake(healthy_fake))
    recs = [t.user_attrs["compile_key"] for t in load(spec).trials]
    assert all(r["cache"] is None and r["cached"] is False for r in recs)
    assert len({r["key"] for r in recs}) == 1


@pytest.mark.parametrize("mode", ["off", "rank", "variants"])
def test_the_sampler_gets_the_learnt_cost_unless_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    import tuner.search.trial_cost
    from tuner.search.restart_cost import RestartCost
    from tuner.search.samplers import set_trial_cost as real

    calls: list[tuple[Any, str]] = []

    def spy(sampler: optuna.samplers.BaseSampler, cost: Any, how: str = "rank") -> bool:
        calls.append((cost, how))
        return real(sampler, cost, how)

    monkeypatch.setattr(tuner.search.trial_cost, "set_trial_cost", spy)
    search = {"gpu-memory-utilization": {"low": 0.1, "high": 0.5}, "max-num-seqs": {"choices": [16, 32]}}
    spec = write_spec(tmp_path, search=search, n_trials=6, compile_key_reuse=mode)
    run_study(spec, trial_fn=Fake(healthy_fake))
    trials = load(spec).trials
    recs = [t.user_attrs["compile_key"] for t in trials]
    assert all(isinstance(r["key"], str) and r["cache"] for r in recs)  # recorded whatever the mode
    assert [r["cached"] for r in recs] == expected_cached(trials)
    if mode == "off":
        assert calls == []
        return
    costs = [c for c, _ in calls if c is not None]  # (None: the loop asking whether the sampler can)
    assert len(costs) == 6 and all(isinstance(c, RestartCost) for c in costs)
    assert {how for _, how in calls} == {mode}
    assert costs[0].compiled == frozenset()
    assert costs[-1].compiled == {r["key"] for r in recs[:-1]}  # learnt before the last trial


def test_random_sampler_records_keys_without_a_cost(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, sampler="random", n_trials=4)
    run_study(spec, trial_fn=Fake(healthy_fake))
    trials = load(spec).trials
    assert [t.user_attrs["compile_key"]["cached"] for t in trials] == expected_cached(trials)
