"""Length and think-time distributions: seeded, matching their parameters, clipped; the schema's checks
with key paths; the traffic plan (turns, dataset order, outputs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuner.config.spec import spec_from_dict
from tuner.config.workload import Empirical, LogNormal, Normal, Uniform, Workload
from tuner.errors import SpecError
from tuner.load.lengths import plan_traffic

N = 20_000


def workload(**kw: Any) -> Workload:
    return Workload.model_validate({"requests": 10, **kw})


def study(**workload_keys: Any) -> dict[str, Any]:
    return {"name": "s", "model": "m", "workload": {"requests": 10, **workload_keys}}


def test_uniform_matches_its_parameters() -> None:
    d = Uniform(low=10, high=20)
    x = d.sample(N, np.random.default_rng(1))
    assert x.min() == 10 and x.max() == 20 and x.dtype == np.int64
    assert abs(x.mean() - 15) < 0.1 and d.mean() == 15
    assert set(np.unique(x)) == set(range(10, 21))


def test_normal_matches_its_parameters() -> None:
    d = Normal.model_validate({"dist": "normal", "mean": 500, "std": 100, "max": 10_000})
    x = d.sample(N, np.random.default_rng(2))
    assert abs(x.mean() - 500) < 3 and abs(x.std() - 100) < 3
    assert abs(d.mean() - 500) < 2


def test_lognormal_matches_its_parameters() -> None:
    d = LogNormal(median=300, sigma=0.5, max=100_000)
    x = d.sample(N, np.random.default_rng(3))
    assert abs(np.median(x) / 300 - 1) < 0.03
    assert abs(np.std(np.log(x)) - 0.5) < 0.02
    assert abs(d.mean() / (300 * math.exp(0.5**2 / 2)) - 1) < 0.01  # the law's mean


def test_clipping_and_at_least_one() -> None:
    d = Normal.model_validate({"dist": "normal", "mean": 5, "std": 50, "max": 40})
    x = d.sample(N, np.random.default_rng(4))
    assert x.min() == 1 and x.max() == 40
    d2 = LogNormal(median=100, sigma=2, min=50, max=60)
    x2 = d2.sample(N, np.random.default_rng(4))
    assert x2.min() == 50 and x2.max() == 60 and d2.bounds() == (50, 60)


def test_seeded() -> None:
    d = LogNormal(median=300, sigma=0.5, max=9000)
    a = d.sample(100, np.random.default_rng(7))
    assert np.array_equal(a, d.sample(100, np.random.default_rng(7)))
    assert not np.array_equal(a, d.sample(100, np.random.default_rng(8)))


def test_empirical_draws_the_files_values(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("10\n20\n\n20\n30\n")
    d = Empirical(file="l.txt")
    x = d.sample(N, np.random.default_rng(5), tmp_path)
    assert set(np.unique(x)) == {10, 20, 30}
    assert abs((x == 20).mean() - 0.5) < 0.02
    assert d.mean(tmp_path) == 20 and d.bounds(tmp_path) == (10, 30)


def test_think_time_distribution() -> None:
    w = workload(
        input_tokens=8,
        output_tokens=4,
        sessions={"turns": 3, "think_time_s": {"dist": "uniform", "low": 1, "high": 3}},
    )
    assert w.sessions is not None
    t = w.sessions.think_time_s
    assert not isinstance(t, float | int)
    x = t.sample(N, np.random.default_rng(0))
    assert x.min() >= 1 and x.max() <= 3 and abs(x.mean() - 2) < 0.02 and t.mean() == 2


@pytest.mark.parametrize(
    ("keys", "where", "reason"),
    [
        ({"input_tokens": {"dist": "uniform", "low": 0, "high": 5}, "output_tokens": 4}, "workload.input_tokens.low", "greater than or equal to 1"),
        ({"input_tokens": {"dist": "uniform", "low": 9, "high": 5}, "output_tokens": 4}, "workload.input_tokens", "must not exceed"),
        ({"input_tokens": {"dist": "normal", "mean": 9, "std": 1}, "output_tokens": 4}, "workload.input_tokens.max", "missing"),
        ({"input_tokens": {"dist": "lognormal", "median": 9, "sigma": -1, "max": 99}, "output_tokens": 4}, "workload.input_tokens.sigma", "greater than or equal to 0"),
        ({"input_tokens": {"dist": "zipf"}, "output_tokens": 4}, "workload.input_tokens", "dist: one of uniform"),
        ({"input_tokens": {"dist": "uniform", "low": 1, "high": 5, "mode": 2}, "output_tokens": 4}, "workload.input_tokens.mode", "unknown key"),
        ({"input_tokens": 8, "output_tokens": {"dist": "empirical"}}, "workload.output_tokens.file", "missing"),
        ({"input_tokens": 8}, "workload", "output_tokens: required key is missing"),
        ({"output_tokens": 8}, "workload", "input_tokens: required key is missing"),
        ({"input_tokens": 8, "output_tokens": 4, "sessions": {"turns": 0}}, "workload.sessions.turns", "greater than 0"),
        ({"input_tokens": 8, "output_tokens": 4, "sessions": {"think_time_s": -1}}, "workload.sessions.think_time_s", "greater than or equal to 0"),
        ({"input_tokens": {"dist": "uniform", "low": 4, "high": 9}, "output_tokens": 4, "shared_prefix_tokens": 4}, "workload", "smallest value"),
        ({"input_tokens": 8, "output_tokens": 4, "dataset": {"path": "x", "format": "lengths"}}, "workload", "not both"),
        ({"output_tokens": 4, "dataset": {"path": "x", "format": "csv"}}, "workload.dataset.format", "jsonl"),
        ({"output_tokens": 4, "dataset": {"path": "x", "format": "jsonl"}, "shared_prefix_tokens": 4}, "workload", "synthetic prompts"),
        ({"input_tokens": 8, "output_tokens": 4, "arrivals": {"kind": "gamma"}}, "workload", "needs request_rate"),
        ({"input_tokens": 8, "output_tokens": 4, "request_rate": 2, "arrivals": {"burstiness": 0.5}}, "workload", "gamma only"),
        ({"input_tokens": 8, "output_tokens": 4, "arrivals": {"kind": "trace"}}, "workload", "format: lengths"),
        ({"dataset": {"path": "x", "format": "lengths"}, "concurrency": 2, "arrivals": {"kind": "trace"}}, "workload", "neither concurrency"),
        ({"input_tokens": 8, "output_tokens": 4, "arrivals": {"kind": "gamma", "burstiness": 0, "scale": 1}}, "workload.arrivals.burstiness", "greater than 0"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_key(keys: dict[str, Any], where: str, reason: str) -> None:
    with pytest.raises(SpecError) as e:
        spec_from_dict(study(**keys), "f.yaml")
    assert str(e.value).startswith(f"f.yaml: {where}: "), str(e.value)
    assert reason in str(e.value)


def test_accessors() -> None:
    w = workload(
        input_tokens={"dist": "uniform", "low": 10, "high": 30},
        output_tokens={"dist": "lognormal", "median": 50, "sigma": 0.3, "max": 400},
    )
    assert w.mean_input_tokens() == 20
    assert abs(w.mean_output_tokens() / (50 * math.exp(0.045)) - 1) < 0.01
    assert w.max_output_tokens() == 400 and not w.is_open_loop
    fixed = workload(input_tokens=10, output_tokens=5, request_rate=2)
    assert (fixed.mean_input_tokens(), fixed.mean_output_tokens(), fixed.max_output_tokens()) == (10, 5, 5)
    assert fixed.is_open_loop


def test_trace_is_open_loop_and_fixed_mode_allowed() -> None:
    w = workload(
        dataset={"path": "t.csv", "format": "lengths"}, arrivals={"kind": "trace", "scale": 2}, mode="fixed"
    )
    assert w.is_open_loop and w.input_tokens is None


def test_a_plan_is_seeded_and_sessions_draw_turns() -> None:
    w = workload(
        input_tokens={"dist": "uniform", "low": 5, "high": 50},
        output_tokens=7,
        sessions={"turns": {"dist": "uniform", "low": 1, "high": 4}, "think_time_s": 2.5},
    )
    a = plan_traffic(w, 400)
    assert a == plan_traffic(w, 400)
    turns = [len(c.turns) for c in a]
    assert set(turns) == {1, 2, 3, 4} and abs(np.mean(turns) - 2.5) < 0.2
    assert all(t.output_tokens == 7 for c in a for t in c.turns)
    assert all(c.turns[0].think_s == 0 and all(t.think_s == 2.5 for t in c.turns[1:]) for c in a)
    assert all(5 <= (t.input_tokens or 0) <= 50 for c in a for t in c.turns)
    other = plan_traffic(w.model_copy(update={"seed": 1}), 400)
    assert other != a


def test_a_dataset_is_used_once_before_repeats(tmp_path: Path) -> None:
    lines = "\n".join(f"{i + 1},{i + 2}" for i in range(10))
    (tmp_path / "l.csv").write_text(f"input_tokens,output_tokens\n{lines}\n")
    w = workload(dataset={"path": "l.csv", "format": "lengths"})
    plans = plan_traffic(w, 25, tmp_path)
    ins = [c.turns[0].input_tokens or 0 for c in plans]
    assert sorted(ins[:10]) == list(range(1, 11)) and sorted(ins[10:20]) == list(range(1, 11))
    assert ins[:10] != list(range(1, 11))  # shuffled
    assert all(c.turns[0].output_tokens == (c.turns[0].input_tokens or 0) + 1 for c in plans)
    w2 = workload(dataset={"path": "l.csv", "format": "lengths"}, output_tokens=3)
    assert all(c.turns[0].output_tokens == 3 for c in plan_traffic(w2, 5, tmp_path))


def test_a_stored_spec_validates_again() -> None:
    keys = {
        "input_tokens": {"dist": "normal", "mean": 50, "std": 5, "max": 90},
        "output_tokens": {"dist": "empirical", "file": "o.csv", "column": "output_tokens"},
        "sessions": {"turns": {"dist": "uniform", "low": 1, "high": 3}, "think_time_s": {"dist": "normal", "mean": 1, "std": 1}},
        "arrivals": {"kind": "gamma", "burstiness": 0.5},
        "request_rate": 2,
    }  # fmt: skip
    spec = spec_from_dict(study(**keys), "f.yaml")
    again = spec_from_dict(json.loads(spec.model_dump_json()), "f.yaml")
    assert again == spec and again.workload.model_dump()["input_tokens"]["mean"] == 50
