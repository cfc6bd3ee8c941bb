"""Reports count and score failed trials alike whether they were told PRUNED without values (studies since
that rule) or COMPLETE with penalty values (older studies, such as the stored H200 ones): ``status``, the
front's header, the step view, the trial table, the spreads of ``confirm`` and the web view."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tuner.cli.common import load_study
from tuner.config.redact import Redactor
from tuner.config.spec import Confirm, load_spec
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.report.pareto import front_header, report_rows, step_view
from tuner.report.plot import picture
from tuner.report.status import study_status
from tuner.report.trials import trial_rows
from tuner.search.loop import run_study
from tuner.search.record import ATTR_HEARTBEAT, read
from tuner.web import cache, views

ROOT = Path(__file__).resolve().parents[2]
H200 = ROOT / "results" / "h200"

STUDY: dict[str, Any] = {
    "name": "states",
    "model": "./m",
    "search": {"max-num-seqs": {"choices": [8, 16, 32, 64]}},
    "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
    "slo": {"ttft_p99_ms": 1000},
    "n_trials": 4,  # TPE, seed 0: the baseline, 64, then two others
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))  # never ~/.cache/vllm
    monkeypatch.setenv("TUNER_CHECK_VLLM_FLAGS", "0")


class Fake:
    """Throughput 10 x max-num-seqs; ``max-num-seqs`` 64 runs out of memory; once ``fail_all`` is set,
    every trial crashes (the repeats of a confirm)."""

    def __init__(self) -> None:
        self.fail_all = False

    def __call__(self, spec: Any, params: Mapping[str, Any], **_: Any) -> TrialResult:
        seqs = int(params.get("max-num-seqs", 16))
        if self.fail_all:
            return TrialResult(status="crashed", message="engine died")
        if seqs == 64:
            return TrialResult(status="oom", message="CUDA out of memory")
        m = {
            "output_throughput_tok_s": 10.0 * seqs,
            "ttft_ms": {"p99": 100.0},
            "load": {"concurrency": seqs, "requests": 8},
        }
        sent = {"kind": "random", "requests": 8}
        return TrialResult(
            status="ok", summary=Summary.from_dict(m), flags=dict(params), startup_s=1.0, traffic=sent
        )


@pytest.fixture
def new_style(tmp_path: Path) -> optuna.Study:
    """A study of the baseline and every choice (64 fails: PRUNED), then a failed repeat of the leader and
    of the baseline (always confirmed)."""
    (tmp_path / "m").mkdir()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    spec = load_spec(tmp_path / "s.yaml")
    fake = Fake()
    run_study(spec, trial_fn=fake)
    fake.fail_all = True
    run_study(spec, trial_fn=fake, confirm=Confirm(top=1, repeats=1))
    study: optuna.Study = load_study(spec, None)
    return study


def failed_numbers(study: optuna.Study) -> list[int]:
    return [r.number for r in map(read, study.get_trials(deepcopy=False)) if r.failed and r.repeat_of is None]


def test_a_new_study_tells_failures_pruned_and_reports_count_them(new_style: optuna.Study) -> None:
    records = [read(t) for t in new_style.get_trials(deepcopy=False)]
    failed = [r for r in records if r.failed]
    assert failed and all(r.state == TrialState.PRUNED and r.values is None for r in failed)
    (oom,) = failed_numbers(new_style)
    row = study_status(new_style)
    originals = [r for r in records if r.repeat_of is None]
    assert (row["finished"], row["failed"], row["ok"]) == (len(originals), 1, len(originals) - 1)
    assert row["repeats"] == 2 and row["sent"] == "sent: random, 8 requests"
    # a failed repeat counts, as 0 tok/s: each range reaches 0
    assert [(c["n"], c["low"]) for c in row["confirmed"]] == [(2, 0.0), (2, 0.0)]
    assert step_view(new_style).failed == [(oom, "oom")]
    by_number = {r["trial"]: r for r in trial_rows(new_style)}
    assert by_number[oom]["objectives"] == {} and by_number[oom]["state"] == "PRUNED"
    rows = report_rows(new_style)
    assert oom not in [r["trial"] for r in rows] and all(r["values"] for r in rows)
    assert front_header(new_style, rows)[0].startswith("states: Pareto front")


def test_an_old_study_with_penalty_values_reports_the_same(tmp_path: Path) -> None:
    db = tmp_path / "refined.db"
    shutil.copy(H200 / "h200-llama8b-refined.db", db)
    study = optuna.load_study(study_name="h200-llama8b-refined", storage=f"sqlite:///{db}")
    (oom,) = failed_numbers(study)
    old = read(study.get_trials(deepcopy=False)[oom])
    assert old.state == TrialState.COMPLETE and old.values and old.scored_values is None  # a penalty
    row = study_status(study)
    assert row["failed"] == 1 and row["ok"] == row["finished"] - 1
    assert step_view(study).failed == [(oom, "oom")]
    assert {r["trial"]: r for r in trial_rows(study)}[oom]["objectives"] == {}
    assert all(r["trial"] != oom for r in report_rows(study))
    data = cache.load(study, None, time.time())
    row_view = views.trial_row(data.records[oom], data.metric_names, on_front=False)
    assert row_view["values"] == "-" and row_view["failed"]
    assert views.overview(data, Redactor.from_sources({}, {}))["failed"] == 1


def test_the_web_view_reads_heartbeats_through_the_record_and_draws_no_labels(
    new_style: optuna.Study,
) -> None:
    running = new_style.ask()
    running.set_user_attr(ATTR_HEARTBEAT, 1234.5)
    data = cache.load(new_style, None, time.time())
    assert data.heartbeats == {running.number: 1234.5}
    assert data.records[running.number].heartbeat_at == 1234.5
    assert all(not p.load_labels and not p.trial_labels for p in data.picture.panels)
    drawn = picture(step_view(new_style), "t")
    assert any(p.load_labels for p in drawn.panels)
    assert data.picture.note == drawn.note and "oom" in drawn.note


def test_a_step_cut_short_over_a_limit_is_shown_over_it(tmp_path: Path) -> None:
    """Trial 7 of the H200 study: its only step was cut short once ITL p99 <= 50 ms was settled broken,
    though the requests that finished give 49.5 ms; the reports say OVER, not ok."""
    from tuner.report.trials import detail_lines, trial_detail

    db = tmp_path / "refined.db"
    shutil.copy(H200 / "h200-llama8b-refined.db", db)
    study = optuna.load_study(study_name="h200-llama8b-refined", storage=f"sqlite:///{db}")
    d = trial_detail(study, 7)
    assert d["meets_slo"] is False
    assert d["steps"][0]["slo"]["itl_p99"]["within"] is False
    assert d["steps"][0]["slo"]["ttft_p99"]["within"] is True
    text = "\n".join(detail_lines(d))
    assert "ITL p99 49.5 OVER (settled)" in text and "bracket below 32" in text


def test_the_last_line_says_the_best_against_vllms_defaults(tmp_path: Path) -> None:
    from tuner.report.pareto import versus_defaults
    from tuner.report.trials import find_trial

    db = tmp_path / "refined.db"
    shutil.copy(H200 / "h200-llama8b-refined.db", db)
    study = optuna.load_study(study_name="h200-llama8b-refined", storage=f"sqlite:///{db}")
    line = versus_defaults(study, find_trial(study, 5))
    assert line == (
        "best: trial 5, +72.4 % SLO capacity under TTFT p99 <= 1000 ms, ITL p99 <= 50 ms vs vLLM's "
        "defaults (trial 0: 3513 tok/s at load 32)"
    )
    assert versus_defaults(study, find_trial(study, 0)).startswith(
        "best: vLLM's defaults (trial 0); no searched"
    )


def test_show_puts_the_simulators_prediction_beside_the_measurement(tmp_path: Path) -> None:
    import json
    import sqlite3

    from tuner.report.trials import detail_lines, trial_detail
    from tuner.search.record import ATTR_PREDICTION

    db = tmp_path / "refined.db"
    shutil.copy(H200 / "h200-llama8b-refined.db", db)
    pred = {"feasible": True, "metrics": {"output_throughput": 5402.0, "ttft_p99": 940.0}, "level": 56}
    with sqlite3.connect(db) as con:  # a finished trial cannot be changed through Optuna: write the row
        (tid,) = con.execute("select trial_id from trials where number = 5").fetchone()
        con.execute(
            "insert into trial_user_attributes (trial_id, key, value_json) values (?, ?, ?)",
            (tid, ATTR_PREDICTION, json.dumps(pred)),
        )
    study = optuna.load_study(study_name="h200-llama8b-refined", storage=f"sqlite:///{db}")
    d = trial_detail(study, 5)
    assert d["predicted"]["errors"]["output_throughput"] == pytest.approx(5402 / 6054.94 - 1, abs=1e-4)
    text = "\n".join(detail_lines(d))
    assert "predicted by the simulator: feasible at load 56;" in text and "5402 (-11 %)" in text, text
    assert trial_detail(study, 6)["predicted"] is None
    # the dashboard's trial page says the same
    page = views.trial_view(cache.load(study, None, time.time()), 5, Redactor.from_sources({}, {}))
    assert page is not None and "(-11 %)" in page["prediction"]
