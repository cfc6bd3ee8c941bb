"""optuna-dashboard reads a tuner study right, checked through its own JSON API (its WSGI app, no browser):
objective names, the constraints list it shows, the flat attributes people filter on, failed trials PRUNED
without made-up values (kept out of the plots and the front), parameter importance over measured trials."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from tests.integration.test_study_fake import Fake, write_spec
from tuner.config.paths import default_storage
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.search.loop import run_study

optuna_dashboard = pytest.importorskip("optuna_dashboard")


def get(app: Any, path: str) -> Any:
    """GET ``path`` from the WSGI app; its JSON."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET", QUERY_STRING="", **{"wsgi.input": io.BytesIO()})
    status: list[str] = []
    body = b"".join(app(environ, lambda s, _h, _e=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:300])
    return json.loads(body)


def measured(params: Mapping[str, Any]) -> TrialResult:
    """A measurement whose TTFT grows with max-num-seqs (the SLO is 2000 ms: 64 seqs break it)."""
    seqs = float(params.get("max-num-seqs", 16))
    metrics = {
        "output_throughput_tok_s": 100 * math.log2(seqs + 1),
        "ttft_ms": {"p99": 60.0 * seqs},
        "completed": 8,
        "load": {"concurrency": 4, "requests": 8},
    }
    now = time.time()
    return TrialResult(
        status="ok", summary=Summary.from_dict(metrics), flags=dict(params), started_at=now, ended_at=now
    )


def oom_every_third(i: int, params: Mapping[str, Any]) -> TrialResult | None:
    if i % 3 == 2:
        return TrialResult(status="oom", message="CUDA out of memory (fake)")
    return measured(params)


def test_the_dashboard_shows_names_constraints_verdicts_and_no_penalty_values(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, n_trials=7)
    run_study(spec, trial_fn=Fake(oom_every_third))
    app = optuna_dashboard.wsgi(default_storage(spec))
    (study,) = get(app, "/api/studies")["study_summaries"]
    detail = get(app, f"/api/studies/{study['study_id']}")

    assert detail["objective_names"] == ["output_throughput", "ttft_p99"]
    trials = detail["trials"]
    assert len(trials) == 7
    attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in trials]
    failed = [t for t, a in zip(trials, attrs, strict=True) if a["status"] == "oom"]
    ok = [(t, a) for t, a in zip(trials, attrs, strict=True) if a["status"] == "ok"]
    assert len(failed) == 2 and len(ok) == 5

    for t in failed:  # no values to plot, both constraints violated, in the order of constraint_keys
        assert t["state"] == "Pruned" and "values" not in t
        assert t["constraints"] == [10.0, 1.0]
    for t, a in ok:
        assert t["state"] == "Complete" and len(t["values"]) == 2
        ttft = t["values"][1]
        assert t["constraints"] == pytest.approx([ttft / 2000 - 1, 0.0])
        assert a["slo_verdict"] == ("pass" if ttft <= 2000 else "fail")
        assert float(a["p99_ttft_ms"]) == pytest.approx(ttft) and a["scored_concurrency"] == "4"
    assert {a["key"] for a in detail["union_user_attrs"]} >= {
        "status",
        "failure",
        "slo_verdict",
        "p99_ttft_ms",
    }
    sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    assert sortable["p99_ttft_ms"] and sortable["scored_concurrency"]

    front = {t["number"] for t in detail["best_trials"]}
    assert front and not front & {t["number"] for t in failed}
    importances = get(app, f"/api/studies/{study['study_id']}/param_importances")["param_importances"]
    assert len(importances) == 2  # one per objective, computed over the measured (COMPLETE) trials only
