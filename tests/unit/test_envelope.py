"""The step-level front: every measured step as a point, its SLO verdicts by tuner's own rule, and the
envelope checked against an independent dominance computation; the step table and CSV."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import optuna
import pytest

from tuner.report.envelope import (
    Step,
    build,
    envelope,
    load_kind,
    load_level,
    load_text,
    max_failed_fraction,
    primary_latency,
    slo_limits,
    step_row,
)
from tuner.report.machine import steps_csv
from tuner.report.table import steps_table
from tuner.search.record import TrialRecord, read

SPEC = {"slo": {"ttft_p99_ms": 1000.0, "itl_p99_ms": 50.0, "e2e_p99_ms": None}}
NAMES, MAXIMIZE = ["output_throughput", "ttft_p99"], [True, False]


def step(conc: int, thr: float, ttft: float, itl: float, *, failed: int = 0) -> dict[str, Any]:
    return {
        "output_throughput_tok_s": thr,
        "ttft_ms": {"p99": ttft},
        "itl_ms": {"p99": itl},
        "completed": 100 - failed,
        "failed": failed,
        "load": {"concurrency": conc, "requests": 100},
    }


def record(
    number: int,
    steps: list[dict[str, Any]],
    *,
    status: str = "ok",
    baseline: bool = False,
    scored: int = 0,
    params: dict[str, Any] | None = None,
) -> TrialRecord:
    result: dict[str, Any] = {"steps": steps, "scored_step": scored} if steps else {}
    t = optuna.trial.create_trial(
        values=[0.0, 1.0],
        user_attrs={
            "status": status,
            "failure": None if status == "ok" else status,
            "is_baseline": baseline,
            "run_params": {} if baseline else (params or {"max-num-seqs": 64}),
            "result": result,
        },
    )
    t.number = number
    return read(t)


def test_every_step_is_a_point_with_the_capacity_rules_verdicts() -> None:
    recs = [
        record(0, [step(32, 3400, 816, 14), step(64, 4583, 1626, 188)], baseline=True),
        record(1, [], status="oom"),
        record(2, [step(32, 4500, 520, 32), step(64, 6450, 1066, 35)], params={"quantization": "fp8"}),
        record(3, [step(32, 4000, 500, 20, failed=10)]),  # 10 % of requests failed: broken
    ]
    view = build(recs, NAMES, MAXIMIZE, SPEC)
    assert view.primary == "ttft_p99" and view.latencies == ["ttft_p99", "itl_p99"]
    assert view.slo == {"ttft_p99": 1000.0, "itl_p99": 50.0}
    assert view.failed == [(1, "oom")]
    assert [(s.trial, s.index) for s in view.steps] == [(0, 0), (0, 1), (2, 0), (2, 1), (3, 0)]
    by = {(s.trial, s.index): s for s in view.steps}
    assert by[0, 0].meets and by[0, 0].scored and by[0, 0].is_baseline and by[0, 0].params == {}
    assert by[0, 1].within == {"ttft_p99": False, "itl_p99": False} and not by[0, 1].meets
    assert by[2, 1].within == {"ttft_p99": False, "itl_p99": True} and not by[2, 1].scored
    assert by[3, 0].within == {"ttft_p99": True, "itl_p99": True} and not by[3, 0].meets
    assert by[2, 0].latency == {"ttft_p99": 520, "itl_p99": 32} and by[2, 0].load["concurrency"] == 32


def test_a_fixed_mode_trial_is_one_point() -> None:
    t = optuna.trial.create_trial(
        values=[1.0, 2.0],
        user_attrs={"status": "ok", "result": {"metrics": step(8, 900, 300, 20)}},
    )
    view = build([read(t)], NAMES, MAXIMIZE, SPEC)
    assert [(s.throughput, s.scored, s.meets) for s in view.steps] == [(900, True, True)]


@pytest.mark.parametrize(
    ("names", "maximize", "spec", "want"),
    [
        (["output_throughput", "itl_p99"], [True, False], SPEC, "itl_p99"),
        (["output_throughput"], [True], {"slo": {"itl_p99_ms": 50}}, "itl_p99"),
        (["output_throughput"], [True], {}, "ttft_p99"),
    ],
)
def test_the_primary_latency(names: list[str], maximize: list[bool], spec: dict[str, Any], want: str) -> None:
    assert primary_latency(names, maximize, slo_limits(spec)) == want
    assert build([], names, maximize, spec).latencies[0] == want


def test_stored_spec_reading_is_lenient() -> None:
    assert slo_limits(None) == {} and slo_limits({"slo": "x"}) == {}
    assert slo_limits({"slo": {"ttft_p99_ms": -1}}) == {}  # not a limit Slo accepts
    assert slo_limits({"slo": {"ttft_p99_ms": 500, "old_key": 3}}) == {"ttft_p99": 500}
    assert max_failed_fraction({"workload": {"max_failed_fraction": 0.2}}) == 0.2
    assert max_failed_fraction({"workload": {"max_failed_fraction": "x"}}) == 0.05


def _point(trial: int, thr: float, lat: float | None, pruned: str | None = None) -> Step:
    return Step(trial, 0, {}, thr, {"ttft_p99": lat}, {}, True, False, pruned, False, {})


def independent_front(points: list[Step]) -> set[tuple[float, float]]:
    """Dominance by hand (test-only): positions no other point beats on both axes."""
    pos = {(p.throughput, p.latency["ttft_p99"]) for p in points if p.latency["ttft_p99"] is not None}

    def beaten(a: tuple[float, Any]) -> bool:
        return any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in pos)

    return {a for a in pos if not beaten(a)}


@pytest.mark.parametrize("seed", range(10))
def test_envelope_matches_independent_dominance(seed: int) -> None:
    rnd = random.Random(seed)
    pts = [
        _point(
            i,
            round(rnd.uniform(0, 1000), -1),
            None if rnd.random() < 0.1 else round(rnd.uniform(10, 4000), -2),
        )
        for i in range(60)
    ]
    front = envelope(pts, "ttft_p99")
    assert {(p.throughput, p.latency["ttft_p99"]) for p in front} == independent_front(pts)
    assert len(front) == len({(p.throughput, p.latency["ttft_p99"]) for p in front})  # one of each tie
    thr = [p.throughput for p in front]
    lat = [p.latency["ttft_p99"] or 0.0 for p in front]  # every step of the front has one
    assert thr == sorted(thr) and lat == sorted(lat)  # the envelope rises: more throughput, more latency


def test_of_identical_points_the_first_trial_stays() -> None:
    assert [p.trial for p in envelope([_point(4, 10, 5), _point(2, 10, 5), _point(3, 5, 9)], "ttft_p99")] == [
        2
    ]


def test_a_step_cut_short_is_no_point_of_the_front() -> None:
    pts = [_point(1, 10, 5), _point(2, 50, 3, pruned="ttft_p99 settled over its limit")]
    assert [p.trial for p in envelope(pts, "ttft_p99")] == [1]


def test_load_text() -> None:
    assert load_text({"concurrency": 32, "requests": 256}) == "concurrency 32"
    assert load_text({"concurrency": 32}, short=True) == "32"
    assert load_text({"request_rate": 2.5, "duration_s": 30}) == "2.5 req/s"
    assert load_text({"request_rate": 2.5}, short=True) == "2.5/s"
    assert load_text({}) == "-"


def test_load_of_a_replayed_trace_and_of_rate_arrivals() -> None:
    trace = {"arrivals": "trace", "trace_scale": 2.0, "requests": 300}
    assert (load_level(trace), load_kind(trace)) == (2.0, "trace_scale")
    assert load_text(trace) == "trace x2" and load_text(trace, short=True) == "x2"
    gamma = {"request_rate": 4.0, "arrivals": "gamma", "burstiness": 0.5, "requests": 200}
    assert (load_level(gamma), load_kind(gamma)) == (4.0, "request_rate")
    assert load_text(gamma) == "4 req/s gamma b=0.5" and load_text(gamma, short=True) == "4/s"
    assert load_text({"request_rate": 2.5, "arrivals": "constant"}) == "2.5 req/s constant"
    assert load_text({"request_rate": 2.5, "arrivals": "poisson"}) == "2.5 req/s"
    assert load_kind({"requests": 10}) is None and load_level({"concurrency": True}) is None


def test_step_table_and_csv() -> None:
    recs = [
        record(0, [step(32, 3400, 816, 14), step(64, 4583, 1626, 188)], baseline=True),
        record(2, [step(32, 4500, 520, 32), step(64, 6450, 1066, 35)], params={"quantization": "fp8"}),
    ]
    view = build(recs, NAMES, MAXIMIZE, SPEC)
    rows = [step_row(s) for s in view.front()]
    assert [(r["trial"], r["load"]["concurrency"]) for r in rows] == [(2, 32), (2, 64)]
    assert rows[0]["latency"] == {"ttft_p99": 520, "itl_p99": 32} and rows[0]["meets_slo"] is True
    table = steps_table(rows)
    assert table.row_count == 2
    assert [c.header for c in table.columns][:6] == [
        "trial",
        "load",
        "output_throughput (tok/s)",
        "ttft_p99 (ms)",
        "itl_p99 (ms)",
        "SLO",
    ]
    assert list(table.columns[3].cells) == ["520 ok", "1066 OVER"]
    parsed = list(csv.DictReader(io.StringIO(steps_csv(rows))))
    assert parsed[1]["load_concurrency"] == "64.0" and parsed[1]["p99_ttft_ms_within_slo"] == "false"
    assert parsed[1]["quantization"] == "fp8" and parsed[1]["meets_slo"] == "false"
    assert steps_table([]).row_count == 0 and steps_csv([]).startswith("trial,")
