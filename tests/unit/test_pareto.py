"""The Pareto report: Optuna's front checked against an independent dominance computation, the picks, the
baseline comparison, the table/CSV and the plot files."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from tuner.errors import TunerError, UsageError
from tuner.report.machine import front_csv
from tuner.report.pareto import pareto_rows, pick, report_rows, step_rows, step_view
from tuner.report.plot import write_plot
from tuner.report.table import legend, rich_table

DISTS = {"max-num-seqs": IntDistribution(1, 64), "gpu-memory-utilization": FloatDistribution(0.1, 0.9)}


def add(
    study: optuna.Study,
    thr: float,
    lat: float,
    *,
    violation: float = -0.5,
    status: str = "ok",
    baseline: bool = False,
    params: dict[str, Any] | None = None,
) -> None:
    p = {} if baseline else (params or {"max-num-seqs": random.randint(1, 64), "gpu-memory-utilization": 0.5})
    t = optuna.trial.create_trial(
        params=p,
        distributions={k: DISTS[k] for k in p},
        values=[thr, lat],
        user_attrs={
            "status": status,
            "is_baseline": baseline,
            "failure": None if status == "ok" else status,
            "result": {
                "status": status,
                "metrics": {"output_throughput_tok_s": thr, "ttft_ms": {"p99": lat}, "completed": 10},
                "flags": dict(p),
            },
        },
    )
    t.set_constraint("ttft_p99", violation)
    t.set_constraint("failed", 0.0 if status == "ok" else 1.0)
    study.add_trial(t)


def new_study() -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("metric_names", ["output_throughput", "ttft_p99"])
    study.set_user_attr("spec", {"slo": {"ttft_p99_ms": 2000}})
    return study


def independent_front(study: optuna.Study) -> set[int]:
    """Dominance by hand, over the stored values of the feasible COMPLETE trials (test-only)."""
    feas = [
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and all(c <= 0 for c in t.constraints.values())
    ]

    def dominates(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> bool:
        (at, al), (bt, bl) = a.values, b.values
        return at >= bt and al <= bl and (at > bt or al < bl)

    return {t.number for t in feas if not any(dominates(o, t) for o in feas if o is not t)}


@pytest.mark.parametrize("seed", range(8))
def test_front_matches_independent_dominance(seed: int) -> None:
    random.seed(seed)
    study = new_study()
    add(study, 300, 900, baseline=True)
    for _ in range(40):
        thr = round(random.uniform(0, 1000), -1)  # coarse: ties happen
        lat = round(random.uniform(10, 4000), -2)
        kind = random.random()
        if kind < 0.15:
            add(study, 0.0, 22000.0, violation=10.0, status="oom")
        else:
            add(study, thr, lat, violation=lat / 2000 - 1)
    rows = pareto_rows(study)
    assert {r["trial"] for r in rows} == independent_front(study)
    assert all(r["metrics"] and set(r["values"]) == {"output_throughput", "ttft_p99"} for r in rows)
    thr_sorted = [r["values"]["output_throughput"] for r in rows]
    assert thr_sorted == sorted(thr_sorted, reverse=True)


def test_rows_compare_against_the_baseline() -> None:
    study = new_study()
    add(study, 200, 1000, baseline=True)
    add(study, 300, 500, params={"max-num-seqs": 8, "gpu-memory-utilization": 0.5})
    rows = pareto_rows(study)
    assert [r["trial"] for r in rows] == [1]
    assert rows[0]["vs_baseline"] == pytest.approx({"output_throughput": 50.0, "ttft_p99": -50.0})
    assert rows[0]["params"] == {"max-num-seqs": 8, "gpu-memory-utilization": 0.5}


def test_no_baseline_no_change() -> None:
    study = new_study()
    add(study, 300, 500)
    assert pareto_rows(study)[0]["vs_baseline"] == {"output_throughput": None, "ttft_p99": None}


def test_picks() -> None:
    study = new_study()
    add(study, 100, 100)  # 0: lowest latency
    add(study, 900, 1900)  # 1: highest throughput
    add(study, 700, 400)  # 2: the knee
    add(study, 5000, 3000, violation=0.5)  # SLO broken: never picked
    assert pick(study, "throughput").number == 1
    assert pick(study, "latency").number == 0
    assert pick(study, "knee").number == 2
    with pytest.raises(UsageError):
        pick(study, "fastest")


def test_pick_without_feasible_trial() -> None:
    study = new_study()
    add(study, 0, 1, violation=1.0, status="oom")
    with pytest.raises(TunerError, match="no feasible trial"):
        pick(study, "knee")


def test_single_objective_pick_latency_is_refused() -> None:
    study = optuna.create_study(directions=["maximize"])
    t = optuna.trial.create_trial(values=[5.0], user_attrs={"status": "ok"})
    t.set_constraint("failed", 0.0)
    study.add_trial(t)
    assert pick(study, "throughput").number == 0
    assert pick(study, "knee").number == 0
    with pytest.raises(UsageError, match="minimised"):
        pick(study, "latency")


def test_step_view_kinds() -> None:
    study = new_study()
    add(study, 200, 1000, baseline=True)
    add(study, 300, 2500, violation=0.25)
    add(study, 0, 22000, violation=10.0, status="oom")
    view = step_view(study)
    assert view.failed == [(2, "oom")]  # told as a failure: no point, named instead
    assert [(s.trial, s.is_baseline) for s in view.steps] == [(0, True), (1, False)]
    assert view.primary == "ttft_p99" and view.slo == {"ttft_p99": 2000}


def test_table_and_csv() -> None:
    study = new_study()
    add(study, 200, 1000, baseline=True)
    add(study, 300, 500, params={"max-num-seqs": 8, "gpu-memory-utilization": 0.5})
    add(study, 400, 900, params={"max-num-seqs": 16, "gpu-memory-utilization": 0.25})
    rows = report_rows(study)  # the front, then the baseline (not on it)
    table = rich_table(rows)
    assert table.row_count == 3
    text = front_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["trial"]) for r in parsed] == [2, 1, 0]
    assert (
        parsed[0]["max-num-seqs"] == "16" and float(parsed[0]["output_throughput_vs_baseline_pct"]) == 100.0
    )
    assert [r["on_front"] for r in parsed] == ["true", "true", "false"]  # lowercase, as JSON writes them
    assert list(parsed[0])[-7:] == [  # units in the headers, vLLM's names
        "output_throughput_tok_s",
        "output_throughput_vs_baseline_pct",
        "p99_ttft_ms",
        "p99_ttft_ms_vs_baseline_pct",
        "p99_ttft_ms_limit",
        "p99_ttft_ms_within_slo",
        "meets_slo",
    ]
    assert parsed[0]["p99_ttft_ms_limit"] == "2000.0" and parsed[0]["p99_ttft_ms_within_slo"] == "true"
    assert parsed[0]["meets_slo"] == "true"
    assert "True" not in text and "False" not in text
    assert rich_table([]).row_count == 0


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_plot_files(tmp_path: Path, suffix: str) -> None:
    study = new_study()
    add(study, 200, 1000, baseline=True)
    add(study, 300, 500)
    add(study, 350, 2500, violation=0.25)
    add(study, 0, 22000, violation=10.0, status="oom")
    out = write_plot(study, tmp_path / f"front{suffix}")
    data = out.read_bytes()
    assert len(data) > 1000
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    else:
        assert b"Pareto front" in data and b"SLO ttft_p99" in data


def test_plot_refuses_other_extensions(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.html or \.png"):
        write_plot(new_study(), tmp_path / "front.pdf")


def done(concurrency: int) -> dict[str, Any]:
    return {"completed": 10, "load": {"concurrency": concurrency}}


def test_capacity_steps_become_the_curve() -> None:
    study = new_study()
    t = optuna.trial.create_trial(
        values=[300.0, 800.0],
        user_attrs={
            "status": "ok",
            "result": {
                "status": "ok",
                "metrics": {"output_throughput_tok_s": 300.0, "ttft_ms": {"p99": 800.0}},
                "steps": [
                    {"output_throughput_tok_s": 100.0, "ttft_ms": {"p99": 200.0}, **done(1)},
                    {"output_throughput_tok_s": 300.0, "ttft_ms": {"p99": 800.0}, **done(4)},
                    {"output_throughput_tok_s": 350.0, "ttft_ms": {"p99": 4100.0}, **done(16)},
                ],
                "scored_step": 1,
            },
        },
    )
    t.set_constraint("failed", 0.0)
    study.add_trial(t)
    (row,) = pareto_rows(study)
    for step in row["steps"]:  # each step carries its SLO verdict
        check = step.pop("slo")["ttft_p99"]
        assert check["limit"] == 2000 and check["within"] == (check["value"] <= 2000)
    assert row["steps"] == [  # as stored, "completed" aside
        {"load": {"concurrency": 1}, "output_throughput": 100.0, "ttft_p99": 200.0},
        {"load": {"concurrency": 4}, "output_throughput": 300.0, "ttft_p99": 800.0},
        {"load": {"concurrency": 16}, "output_throughput": 350.0, "ttft_p99": 4100.0},
    ]
    view = step_view(study)
    assert [(s.index, s.load, s.throughput, s.latency) for s in view.steps] == [
        (i, r["load"], r["output_throughput"], {"ttft_p99": r["ttft_p99"]})
        for i, r in enumerate(row["steps"])
    ]
    assert [s.scored for s in view.steps] == [False, True, False]
    # the step-level front: every step no other beats on throughput and TTFT p99 (SLO broken or not)
    assert [(r["trial"], r["load"]["concurrency"], r["meets_slo"]) for r in step_rows(study)] == [
        (0, 1, True),
        (0, 4, True),
        (0, 16, False),
    ]


def test_cli_steps_prints_the_step_level_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from tuner.cli.main import main

    (tmp_path / "m").mkdir()
    spec = {
        "name": "steps",
        "model": "./m",
        "search": {"max-num-seqs": {"low": 1, "high": 64}},
        "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
        "slo": {"ttft_p99_ms": 2000},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="steps", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("metric_names", ["output_throughput", "ttft_p99"])
    study.set_user_attr("spec", {"slo": {"ttft_p99_ms": 2000}})
    steps = [
        {"output_throughput_tok_s": 100.0, "ttft_ms": {"p99": 200.0}, **done(1)},
        {"output_throughput_tok_s": 300.0, "ttft_ms": {"p99": 2800.0}, **done(4)},
    ]
    t = optuna.trial.create_trial(
        values=[100.0, 200.0], user_attrs={"status": "ok", "result": {"steps": steps, "scored_step": 0}}
    )
    t.set_constraint("failed", 0.0)
    study.add_trial(t)
    base = ["pareto", str(tmp_path / "s.yaml"), "--storage", url]
    assert main([*base, "--steps", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["load"]["concurrency"], r["meets_slo"]) for r in rows] == [(1, True), (4, False)]
    assert main([*base, "--steps", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "trial,is_baseline,load_concurrency,load_request_rate_rps,output_throughput_tok_s,p99_ttft_ms,"
        "p99_ttft_ms_within_slo,meets_slo,scored",
        "0,false,1.0,,100.0,200.0,true,true,true",
    ]
    assert main([*base, "--steps"]) == 0
    out = capsys.readouterr().out
    assert "step-level front on ttft_p99 (2 steps)" in out and "2800 OVER" in out
    assert main([*base, "--format", "json"]) == 0  # the default stays the trial-level front
    assert [r["trial"] for r in json.loads(capsys.readouterr().out)] == [0]


def test_the_table_shows_the_spread_over_repeats() -> None:
    study = new_study()
    add(study, 200, 1000, baseline=True)
    add(study, 300, 500, params={"max-num-seqs": 8, "gpu-memory-utilization": 0.5})
    rows = pareto_rows(study)
    assert rows[0]["spread"] == {"trial": 1, "n": 1, "mean": 300.0, "low": 300.0, "high": 300.0}
    # trial, 2 flags, load, throughput + its change (narrow: the first objective's change only), TTFT p99
    assert len(rich_table(rows).columns) == 1 + 2 + 1 + 2 + 1  # no repeats: no spread column
    rows[0]["spread"] = {"trial": 1, "n": 3, "mean": 1300.0, "low": 1260.0, "high": 1340.0}
    table = rich_table(rows, width=160)
    assert table.columns[-1].header == "output throughput over repeats"
    assert list(table.columns[-1].cells) == ["1,300 ± 40 (n=3)"]
    # narrow: no column; the repeats are listed under the table
    assert len(rich_table(rows).columns) == 1 + 2 + 1 + 2 + 1
    assert "#1 1,300 ± 40 over 3" in legend(rows, width=80)
