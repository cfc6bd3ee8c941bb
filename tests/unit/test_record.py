"""tuner.search.record: what a finished trial stores (no nested duplicates), and every stored layout read back
as a typed record: this tuner's, older ones with the nested duplicates or a ``result`` stored as text, and
the two GPU studies in results/h200 (read from copies under tmp_path)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.search.objectives import Evaluation
from tuner.search.record import (
    ATTR_HEARTBEAT,
    CompileKeyRecord,
    launch_of,
    read,
    read_study,
    result_attrs,
    write,
)
from tuner.search.restart_cost import Launch

H200 = Path(__file__).resolve().parents[2] / "results" / "h200"


def frozen(attrs: dict[str, Any], seconds: float = 9.0, params: dict[str, Any] | None = None) -> FrozenTrial:
    params = {"p": 1} if params is None else params
    start = datetime(2025, 1, 1)
    return FrozenTrial(
        number=3,
        state=TrialState.COMPLETE,
        value=1.0,
        datetime_start=start,
        datetime_complete=start + timedelta(seconds=seconds),
        params=params,
        distributions={k: IntDistribution(0, 1024) for k in params},
        user_attrs=attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=3,
    )


class FakeStorage:
    """The part of Optuna's storage that :func:`write` uses: one study (id 1), one trial (id 7)."""

    def __init__(self) -> None:
        self.system_attrs: dict[str, Any] = {}

    def get_study_id_from_name(self, name: str) -> int:
        assert name == "s"
        return 1

    def get_trial_id_from_study_id_trial_number(self, study_id: int, number: int) -> int:
        assert (study_id, number) == (1, 3)
        return 7

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        assert trial_id == 7
        self.system_attrs[key] = value


class FakeTrial:
    """The part of ``optuna.Trial`` that :func:`write` uses."""

    def __init__(self) -> None:
        self.user_attrs: dict[str, Any] = {}
        self.constraints: dict[str, float] = {}
        self.number = 3
        self.study = SimpleNamespace(study_name="s")
        self.storage = FakeStorage()

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def set_constraint(self, key: str, value: float) -> None:
        self.constraints[key] = value


STEP = {"output_throughput_tok_s": 50.0, "ttft_ms": {"p99": 90.0}, "load": {"rate": 2.0}}
RESULT = TrialResult(
    status="crashed",
    argv=["vllm", "serve", "/m", "--max-num-seqs", "64"],
    log_path="/runs/t3.log",
    summary=Summary.from_dict(STEP),
    steps=[Summary.from_dict(STEP), Summary.from_dict(STEP)],
    scored_step=1,
    message="engine died",
    log_tail=[f"line {i}" for i in range(50)],
    started_at=100.0,
    ended_at=230.0,
    startup_s=float("nan"),
    flags={"max-num-seqs": 64},
    env={"vllm_version": "0.26.0", "hardware": "H200"},
    memory_check={"fits": True},
    bottleneck="kv-bound",
    traffic={"kind": "sharegpt", "requests": 300, "digest": "ab" * 32},
)
EV = Evaluation(values=[0.0], constraints={"failed": 1.0}, failure=None)


# ------------------------------------------------------------------------------------------------ write


def test_the_nested_result_repeats_nothing_stored_at_the_top() -> None:
    attrs = result_attrs(RESULT, EV)
    for key in ("status", "argv", "log", "message", "log_tail", "started_at", "ended_at"):
        assert key not in attrs["result"], key
    assert attrs["failure"] == "crashed" and attrs["feasible"] is False
    assert attrs["result"]["startup_s"] is None  # non-finite: null
    json.dumps(attrs)


def test_write_then_read_gives_the_result_back() -> None:
    trial = FakeTrial()
    stored = write(trial, RESULT, EV)  # type: ignore[arg-type]
    assert trial.user_attrs == stored == result_attrs(RESULT, EV)
    assert trial.constraints == EV.constraints
    assert trial.storage.system_attrs == {"constraints": [1.0]}  # the list optuna-dashboard shows
    rec = read(frozen(stored, seconds=130.0))
    assert (rec.status, rec.failure, rec.message, rec.feasible) == (
        "crashed",
        "crashed",
        "engine died",
        False,
    )
    assert rec.failed and rec.launched is True and not rec.refused_before_launch
    assert rec.argv == tuple(RESULT.argv) and rec.log_path == "/runs/t3.log"
    assert rec.log_tail == tuple(RESULT.log_tail[-40:])
    assert (rec.vllm_version, rec.hardware, rec.started_at, rec.ended_at) == ("0.26.0", "H200", 100.0, 230.0)
    assert rec.seconds == 130.0
    assert rec.result is not None
    assert rec.result.metrics == RESULT.summary.to_dict()  # type: ignore[union-attr]
    assert len(rec.result.steps) == 2 and rec.result.scored_step == 1
    assert rec.result.flags == {"max-num-seqs": 64} and rec.result.memory_check == {"fits": True}
    assert rec.result.startup_s is None and rec.result.bottleneck == "kv-bound"
    assert rec.result.traffic == RESULT.traffic and rec.heartbeat_at is None


def test_the_heartbeat_and_what_was_sent_read_from_the_record() -> None:
    rec = read(frozen({ATTR_HEARTBEAT: 1700000000.5, "result": {"traffic": {"kind": "random"}}}))
    assert rec.heartbeat_at == 1700000000.5
    assert rec.result is not None and rec.result.traffic == {"kind": "random"}
    older = read(frozen({ATTR_HEARTBEAT: "soon", "result": {"steps": []}}))
    assert older.heartbeat_at is None and older.result is not None and older.result.traffic == {}


def test_write_redacts_before_storing() -> None:
    trial = FakeTrial()
    write(trial, RESULT, EV, redact=lambda a: {**a, "message": "[redacted]"})  # type: ignore[arg-type]
    assert read(frozen(trial.user_attrs)).message == "[redacted]"


# ------------------------------------------------------------------------------------------------- read

OLD = {
    "is_baseline": True,
    "run_params": {"max-num-seqs": 8},
    "feasible": True,
    "launched": False,
    "compile_key": {"key": "abc", "cache": "host:A", "cached": True},
    "interrupted": True,
    "requeued_from": 1,
    "result": {
        "status": "ok",
        "argv": ["vllm", "serve", "/m"],
        "log": "/runs/old.log",
        "message": "fine",
        "log_tail": ["a", "b"],
        "started_at": 5,
        "ended_at": 7.5,
        "startup_s": 3,
        "steps": [STEP, "not a step"],
    },
}


@pytest.mark.parametrize(
    "attrs",
    [OLD, {**OLD, "result": json.dumps(OLD["result"])}, {**OLD, "result": repr(OLD["result"])}],
    ids=["nested duplicates", "result as JSON text", "result as a Python literal"],
)
def test_an_older_layout_reads(attrs: dict[str, Any]) -> None:
    rec = read(frozen(attrs))
    assert (rec.status, rec.message, rec.log_path) == ("ok", "fine", "/runs/old.log")
    assert rec.argv == ("vllm", "serve", "/m") and rec.log_tail == ("a", "b")
    assert (rec.started_at, rec.ended_at) == (5.0, 7.5)
    assert rec.is_baseline and rec.run_params == {"max-num-seqs": 8} and rec.params == {"p": 1}
    assert rec.launched is False and rec.interrupted and rec.requeued_from == 1
    assert rec.compile_key == CompileKeyRecord("abc", "host:A", True)
    assert rec.result is not None and rec.result.startup_s == 3.0 and rec.result.steps == (STEP,)


def test_an_empty_record_reads_as_nothing_recorded() -> None:
    rec = read(frozen({}))
    assert rec.status is None and not rec.failed and rec.result is None and rec.compile_key is None
    assert rec.launched is None and rec.argv == () and rec.run_params == {"p": 1} and not rec.is_baseline
    assert read(frozen({"result": "not a dict"})).result is None


def test_read_study() -> None:
    study = optuna.create_study()
    assert read_study(study).spec is None and read_study(study).budget is None
    study.set_user_attr("n_trials", 12)
    study.set_user_attr("metric_names", ["output_throughput"])
    study.set_user_attr("spec", {"slo": {}})
    got = read_study(study)
    assert (got.budget, got.metric_names, got.spec) == (12, ("output_throughput",), {"slo": {}})
    assert got.traffic_digest is None  # a study stored before traffic digests
    study.set_user_attr("traffic_digest", "ab" * 32)
    assert read_study(study).traffic_digest == "ab" * 32


@pytest.mark.parametrize("name", ["h200-llama8b.db", "h200-llama8b-reuse.db"])
def test_the_h200_databases_read(tmp_path: Path, name: str) -> None:
    db = tmp_path / name
    shutil.copy(H200 / name, db)
    storage = f"sqlite:///{db}"
    study_name = optuna.get_all_study_summaries(storage)[0].study_name
    study = optuna.load_study(study_name=study_name, storage=storage)
    info = read_study(study)
    assert info.budget and info.metric_names and info.spec
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert complete
    for t in complete:
        rec = read(t)
        assert rec.finished and (rec.scored_values is None) == rec.failed  # penalty values hidden
        nested = t.user_attrs["result"]
        assert rec.status == t.user_attrs["status"] == nested["status"]
        assert list(rec.argv) == t.user_attrs["argv"]
        assert rec.feasible is t.user_attrs["feasible"] and rec.launched is t.user_attrs["launched"]
        assert rec.result is not None and rec.result.metrics == nested["metrics"]
        assert list(rec.result.steps) == nested.get("steps", [])
        assert rec.result.scored_step == nested.get("scored_step")
        assert rec.seconds is not None and rec.seconds > 0
    assert sum(read(t).is_baseline for t in complete) == 1
    with_keys = [read(t).compile_key for t in complete]
    assert all(with_keys) if name.endswith("reuse.db") else not any(with_keys)


# -------------------------------------------------------------------------------------------- launch_of


def test_launch_of_reads_the_trial_record() -> None:
    attrs = {
        "compile_key": {"key": "abc", "cache": "host:A", "cached": True},
        "result": {"status": "ok", "startup_s": 61},
        "is_baseline": False,
    }
    got = launch_of(read(frozen(attrs, 120.0, {"max-num-seqs": 64})))
    assert got == Launch(
        key="abc", cache="host:A", cached=True, startup_s=61.0, trial_s=120.0, params={"max-num-seqs": 64}
    )
    assert got is not None and isinstance(got.startup_s, float)


@pytest.mark.parametrize(
    ("attrs", "expect"),
    [
        ({}, None),
        ({"compile_key": "abc"}, None),
        ({"compile_key": {"cache": "host:A"}}, None),
        ({"compile_key": {"key": 5}}, None),
        (
            {"compile_key": {"key": "k"}, "result": {"status": "crashed"}},
            Launch("k", None, False, None, 9.0, {"p": 1}),
        ),
        (
            {"compile_key": {"key": "k", "cache": 3, "cached": 1}, "result": {"startup_s": "soon"}},
            Launch("k", None, True, None, 9.0, {"p": 1}),
        ),
        (
            {"compile_key": {"key": "k", "cache": "c"}, "result": "not a dict", "is_baseline": True},
            Launch("k", "c", False, None, 9.0, None),
        ),
        (  # refused by a rule, or by the memory check: no start
            {"compile_key": {"key": "k"}, "status": "infeasible"},
            Launch("k", None, False, None, 9.0, {"p": 1}, launched=False),
        ),
        (
            {"compile_key": {"key": "k"}, "status": "oom", "result": {"memory_check": {"fits": False}}},
            Launch("k", None, False, None, 9.0, {"p": 1}, launched=False),
        ),
        (
            {"compile_key": {"key": "k"}, "launched": False},
            Launch("k", None, False, None, 9.0, {"p": 1}, launched=False),
        ),
    ],
)
def test_launch_of_table(attrs: dict[str, Any], expect: Launch | None) -> None:
    assert launch_of(read(frozen(attrs))) == expect


def test_failed_trials_read_alike_pruned_or_stored_with_penalty_values_by_an_older_tuner() -> None:
    failed = {"status": "oom", "failure": "oom", "feasible": False}
    old = read(frozen(failed))  # COMPLETE with a penalty value, as tuner stored failures before
    new = read(
        FrozenTrial(
            number=4,
            state=TrialState.PRUNED,
            value=None,
            datetime_start=datetime(2025, 1, 1),
            datetime_complete=datetime(2025, 1, 1, 0, 1),
            params={"p": 1},
            distributions={"p": IntDistribution(0, 1024)},
            user_attrs=failed,
            system_attrs={},
            intermediate_values={},
            trial_id=4,
        )
    )
    for rec in (old, new):
        assert rec.finished and rec.failed and rec.scored_values is None
    assert old.values == (1.0,) and new.values is None
    measured = read(frozen({"status": "ok", "feasible": True}))
    assert measured.finished and measured.scored_values == (1.0,)
