"""Every study file in studies/ loads with the current schema, and the example studies that read a traffic
file plan their traffic from the small samples in tests/fixtures/ (tuner ships no dataset: the samples
stand in for the user's own copy, under the file name the study gives)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tuner.config.spec import StudySpec, load_spec
from tuner.load.lengths import plan_traffic

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
FIXTURES = ROOT / "tests" / "fixtures"
#: the sample that stands in for each example study's dataset file
SAMPLES = {"chat-sharegpt": "sharegpt-sample.json", "log-replay": "requests-log.csv"}


def test_the_examples_exist() -> None:
    names = {p.stem for p in STUDIES}
    assert {"demo-cpu", "chat-sharegpt", "assistant-multiturn", "log-replay"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_file_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem, "a study's name is its file's name (databases and runs folders follow it)"


def _with_sample(name: str, tmp_path: Path) -> tuple[StudySpec, Path]:
    """The study copied into ``tmp_path`` with the sample beside it under the study's dataset name."""
    src = ROOT / "studies" / f"{name}.yaml"
    spec = load_spec(src)
    assert spec.workload.dataset is not None
    shutil.copy(FIXTURES / SAMPLES[name], tmp_path / spec.workload.dataset.path)
    return spec, tmp_path


def test_chat_sharegpt_plans_from_a_sharegpt_file(tmp_path: Path) -> None:
    spec, base = _with_sample("chat-sharegpt", tmp_path)
    plans = plan_traffic(spec.workload, 20, base)
    assert len(plans) == 20
    firsts = [p.turns[0] for p in plans]
    assert all(t.text and t.text.startswith("Please explain") for t in firsts)
    assert all(t.reply for t in firsts), "the reply that followed sets the output length"
    assert plans == plan_traffic(spec.workload, 20, base), "every trial sends the same traffic"


def test_assistant_multiturn_plans_sessions_with_a_shared_prefix() -> None:
    spec = load_spec(ROOT / "studies" / "assistant-multiturn.yaml")
    w = spec.workload
    assert w.sessions is not None and w.shared_prefix_tokens > 0
    plans = plan_traffic(w, 50)
    turns = [len(p.turns) for p in plans]
    assert min(turns) >= 2 and max(turns) <= 6
    assert all(
        t.input_tokens and t.input_tokens > w.shared_prefix_tokens for t in (p.turns[0] for p in plans)
    )
    assert all(t.think_s > 0 for p in plans for t in p.turns[1:])


def test_log_replay_plans_the_trace_in_time_order(tmp_path: Path) -> None:
    spec, base = _with_sample("log-replay", tmp_path)
    assert spec.workload.arrivals.kind == "trace"
    plans = plan_traffic(spec.workload, 10, base)
    assert len(plans) == 10
    at = [p.at_s for p in plans]
    assert at[0] == 0 and all(a is not None for a in at)
    assert at == sorted(at)  # type: ignore[type-var]
    assert all(p.turns[0].input_tokens and p.turns[0].output_tokens for p in plans)
