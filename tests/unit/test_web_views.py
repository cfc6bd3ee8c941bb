"""The dashboard's page models and HTML over stored studies: a study written by tuner's own writers (no
server), the old databases in results/h200/, the front and SLO limits of the plot, redaction."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tuner.config.spec import load_spec
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.progress import NullReporter
from tuner.report.fmt import fmt_num
from tuner.search import workers
from tuner.search.study import open_study
from tuner.search.tell import tell
from tuner.web import html, views
from tuner.web.cache import StudyData, load
from tuner.web.plot import figure, front_points
from tuner.web.readonly import open_readonly

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hf_verysecretvalue123"
SEARCH = {"max-num-seqs": {"low": 2, "high": 64, "log": True}, "block-size": {"choices": [16, 32]}}


def _step(level: int, speed: float) -> dict[str, Any]:
    return {
        "output_throughput_tok_s": 50.0 * level * speed,
        "ttft_ms": {
            "mean": 10.0 * level,
            "p50": 10.0 * level,
            "p90": 15.0 * level,
            "p99": 20.0 * level / speed,
        },
        "itl_ms": {"p99": 5.0 + level / speed},
        "completed": 16,
        "failed": 0,
        "load": {"concurrency": level, "requests": 16},
    }


def result(number: int, params: dict[str, Any], *, failure: str | None = None) -> TrialResult:
    """A measured trial (three capacity steps, the middle one scored) or a failed one."""
    tail = [f"log line {i}" for i in range(5)] + [f"token {SECRET} in a log"]
    argv = ["vllm", "serve", "/m", "--host", "127.0.0.1", "--port", "1", "--api-key", SECRET]
    if failure:
        return TrialResult(status=failure, argv=argv, message=f"{failure} here", log_tail=tail, flags=params)
    speed = 1.0 + 0.1 * (number % 5)
    steps = [Summary.from_dict(_step(level, speed)) for level in (1, 2, 4)]
    now = time.time()
    return TrialResult(
        status="ok",
        argv=argv,
        summary=steps[1],
        steps=steps,
        scored_step=1,
        log_tail=tail,
        started_at=now - 5,
        ended_at=now,
        startup_s=1.0,
        flags=dict(params),
        env={"vllm_version": "0.0-test", "hardware": "test GPU"},
        gpu={"available": True, "util_mean": 55.0},
        server_metrics={"view": {"kv_cache_usage_max": 0.5}},
        bottleneck="compute-bound",
        memory_check={"fits": True, "need_gib": 10.0},
        capacity={"levels": [1, 2, 4], "stop": "slo broken"},
    )


def make_db(tmp_path: Path, trials: int = 6, *, running: bool = True) -> tuple[str, str]:
    """A study database written by tuner's writers (open_study, tell): ``trials`` finished trials, trial 2
    failed (oom), and one RUNNING trial with a heartbeat. Returns (storage URL, study name)."""
    spec_file = tmp_path / "web.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "web",
                "model": "./m",
                "search": SEARCH,
                "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
                "slo": {"ttft_p99_ms": 100, "itl_p99_ms": 50},
                "n_trials": trials + 4,
            }
        )
    )
    spec = load_spec(spec_file)
    url = f"sqlite:///{tmp_path / 'web.db'}"
    handle = open_study(spec, url, n_trials=trials + 4, must_exist=False).handle
    for i in range(trials):
        trial = handle.study.ask()
        tell(
            handle,
            spec,
            trial,
            result(i, dict(trial.params), failure="oom" if i == 2 else None),
            NullReporter(),
        )
    if running:
        # another host's worker with a fresh heartbeat: alive (this process's own would be an orphan)
        workers.claim(handle.study.ask(), workers.Worker("another-host", 1, None, None))
    return url, "web"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> StudyData:
    url, name = make_db(tmp_path_factory.mktemp("web"))
    study = optuna.load_study(study_name=name, storage=open_readonly(url))
    return load(study, None, time.time())


def test_study_view_counts_trials_failures_running_and_the_front(data: StudyData) -> None:
    v = views.study_view(data, views.redactor(data, {}))
    assert v["finished"] == data.status["finished"] and v["failed"] == 1 and v["budget"] == 10
    assert [t["number"] for t in v["running_trials"]] == [6]
    assert v["running_trials"][0]["alive"] and v["running_trials"][0]["heartbeat"] is not None
    assert len(v["trials"]) == 7
    assert v["trials"][2]["status"] == "oom" and v["trials"][2]["failed"]
    assert v["trials"][0]["baseline"] and v["trials"][0]["params"] == "vLLM defaults"
    assert v["front_points"] == len(data.view.front()) > 0
    assert v["best_trial"] in v["front_trials"]
    assert v["export"] is not None and v["export"]["cmd"].startswith("vllm serve")
    assert "baseline" in v["vs_baseline"]


def test_figure_draws_every_slo_limit_the_front_and_the_baseline(data: StudyData) -> None:
    fig = figure(data.picture)
    names = [t["name"] for t in fig["data"]]
    assert names.count("baseline") == 2 and names.count("configurations") == 2  # one of each per panel
    limits = sorted(s["y0"] for s in fig["layout"]["shapes"])
    assert limits == [50.0, 100.0]
    front = next(t for t in fig["data"] if t["name"].startswith("Pareto front"))
    assert len(front["x"]) == front_points(data.picture)
    # every measured step of every configuration is a point (gaps apart): 5 ok trials x 3 steps
    points = sum(x is not None for t in fig["data"][:2] for x in t["x"])
    assert points == 5 * 3


def test_trial_view_shows_steps_telemetry_memory_and_masks_secrets(data: StudyData) -> None:
    r = views.redactor(data, {"HF_TOKEN": SECRET})
    v = views.trial_view(data, 1, r)
    assert v is not None
    assert len(v["steps"]) == 3 and sum(s["scored"] for s in v["steps"]) == 1
    assert ("util_mean", "55") in v["telemetry"] and ("view.kv_cache_usage_max", "0.5") in v["server"]
    assert v["bottleneck"] == "compute-bound" and ("fits", "true") in v["memory"]
    page = html.trial_main(v, time.time())
    assert SECRET not in page and "***" in page
    assert views.trial_view(data, 99, r) is None


def test_api_key_flag_is_masked_without_knowing_the_secret(data: StudyData) -> None:
    v = views.trial_view(data, 3, views.redactor(data, {}))
    assert v is not None and SECRET not in v["argv"] and "--api-key '***'" in v["argv"]


def test_study_page_html_carries_counts_for_the_browser(data: StudyData) -> None:
    v = views.study_view(data, views.redactor(data, {}))
    main = html.study_main(v, time.time())
    assert 'data-count="7"' in main and f'data-front-points="{v["front_points"]}"' in main
    assert "<script>" not in main  # only the JSON block: nothing inline runs


@pytest.mark.parametrize("db", sorted((ROOT / "results" / "h200").glob("*.db")), ids=lambda p: p.name)
def test_old_databases_read_completely(db: Path) -> None:
    storage = open_readonly(f"sqlite:///{db}")
    for s in storage.get_all_studies():
        d = load(optuna.load_study(study_name=s.study_name, storage=storage), None, time.time())
        r = views.redactor(d, {})
        v = views.study_view(d, r)
        assert v["finished"] > 0 and v["front_points"] > 0
        html.study_main(v, time.time())
        for rec in d.records:
            tv = views.trial_view(d, rec.number, r)
            assert tv is not None
            html.trial_main(tv, time.time())


def test_flatten_nested_mappings() -> None:
    flat = views.flatten({"a": {"b": 1.23456, "c": None}, "d": True})
    assert flat == [("a.b", fmt_num(1.23456)), ("a.c", "-"), ("d", "true")]
