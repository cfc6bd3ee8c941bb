"""The CLI's answers on the stored H200 studies: ``pareto`` that fits 100 columns with the baseline and the
SLO limits, ``trials`` / ``show``, ``best`` with the picked trial, ``--trial`` and the server environment,
``status`` without a guess for a study nobody runs, the one name table, ``tuner`` alone, ``sim --help`` and
an unreadable model folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tuner.cli.main import main
from tuner.config.paths import check_model_access
from tuner.config.spec import load_spec
from tuner.errors import SpecError
from tuner.report.names import flat_summary, key, name, rounded
from tuner.report.traffic import describe_traffic

ROOT = Path(__file__).resolve().parents[2]
H200 = ROOT / "results" / "h200"


@pytest.fixture
def reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``STUDY.yaml --storage URL`` of a copy of the reuse study (its model folder made here)."""
    monkeypatch.setenv("COLUMNS", "100")
    db = tmp_path / "reuse.db"
    shutil.copy(H200 / "h200-llama8b-reuse.db", db)
    spec = yaml.safe_load((ROOT / "studies" / "h200-llama8b-reuse.yaml").read_text())
    spec["model"] = "./m"
    (tmp_path / "m").mkdir()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return [str(tmp_path / "s.yaml"), "--storage", f"sqlite:///{db}"]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_names_follow_vllm() -> None:
    assert key("ttft_p99") == "p99_ttft_ms" and key("e2e_mean") == "mean_e2el_ms"
    assert key("output_throughput") == "output_throughput" and name("itl_p95").unit == "ms"
    assert name("ttft_p99").header(1000.0) == "TTFT p99 ms (<=1000)"
    assert name("output_throughput").csv_header() == "output_throughput_tok_s"
    assert [rounded(x) for x in (4503.58, 526.93, 0.69963, 3)] == [4504.0, 526.9, 0.6996, 3]
    flat = flat_summary({"output_throughput_tok_s": 1.23456, "ttft_ms": {"p99": 800.123}, "goodput_rps": 2.0})
    assert flat == {"output_throughput": 1.235, "request_goodput": 2.0, "p99_ttft_ms": 800.1}


def test_pareto_fits_100_columns_with_the_baseline(
    reuse: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "pareto", *reuse)
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert (
        lines[0] == "h200-llama8b-reuse: Pareto front, 3 configurations (baseline #0 below, not on the front)"
    )
    assert "TTFT p99 <= 1000 ms, ITL p99 <= 50 ms" in out and "SLO capacity" in out
    assert "(<=1000)" in out and "(<=50)" in out
    base = next(line for line in lines if "0 base" in line)
    assert base.count("dflt") == 5 and "3399" in base and "816" in base
    assert "gmu = gpu-memory-utilization" in out
    code, out, _ = cli(capsys, "pareto", *reuse, "--format", "json")
    rows = json.loads(out)
    assert [(r["trial"], r["on_front"]) for r in rows] == [(15, True), (17, True), (16, True), (0, False)]
    assert rows[0]["slo"]["p99_ttft_ms"] == {"value": 526.9, "limit": 1000.0, "within": True}
    assert rows[0]["objectives"] == {"output_throughput": 4504.0, "p99_ttft_ms": 526.9}
    assert rows[0]["load"] == {"concurrency": 32, "requests": 256}
    assert rows[0]["steps"][1]["slo"]["p99_ttft_ms"]["within"] is False


def test_an_empty_front_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    (tmp_path / "m").mkdir()
    spec = {
        "name": "empty",
        "model": "./m",
        "search": {"max-num-seqs": {"low": 1, "high": 8}},
        "workload": {"input_tokens": 8, "output_tokens": 4, "requests": 4},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path}/empty.db", directions=["maximize"])
    code, out, err = cli(capsys, "pareto", str(tmp_path / "s.yaml"))
    assert code == 0, err
    assert out == "empty: no feasible trial yet (0 finished)\n"


def test_trials_and_show(reuse: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "trials", *reuse)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("#0 (baseline)  ok  load 32; SLO capacity 3399 tok/s, TTFT p99 816 ms;")
    assert lines[1] == "#1  oom"
    code, out, _ = cli(capsys, "trials", *reuse, "--json")
    assert json.loads(out)[1]["status"] == "oom"
    code, out, err = cli(capsys, "show", *reuse, "15")
    assert code == 0, err
    assert (
        "  step 1: concurrency 64, 6450 tok/s, 256 done / 0 failed; TTFT p99 1066 OVER, ITL p99 34.8 ok"
        in out
    )
    assert "argv: " in out and "memory check: fits" in out and "bottleneck queueing" in out
    code, out, _ = cli(capsys, "show", *reuse, "15", "--json")
    detail = json.loads(out)
    assert detail["steps"][0]["scored"] and detail["flags"]["quantization"] == "fp8"
    code, _, err = cli(capsys, "show", *reuse, "99")
    assert code == 2 and err == "tuner: error: study 'h200-llama8b-reuse' has no trial 99\n"


def test_best_names_the_trial_and_exports_the_env(
    reuse: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "best", *reuse, "--export", "cmd")
    assert code == 0, err
    assert err.startswith("picked trial 15 (throughput): load 32; SLO capacity 4504 tok/s, TTFT p99 527 ms;")
    assert (
        out.startswith("env DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 ")
        and "VLLM_USE_FLASHINFER_SAMPLER=0 vllm serve " in out
    )
    code, out, err = cli(
        capsys, "best", *reuse, "--export", "yaml", "--trial", "0", "--output", str(tmp_path / "b.yaml")
    )
    assert code == 0, err
    assert "picked trial 0 (--trial 0)" in err
    text = (tmp_path / "b.yaml").read_text()
    assert "# env: VLLM_USE_FLASHINFER_SAMPLER=0" in text and yaml.safe_load(text)["model"]
    assert "VLLM_USE_FLASHINFER_SAMPLER=0\n" in (tmp_path / "b.yaml.env").read_text()
    code, _, err = cli(capsys, "best", *reuse, "--export", "cmd", "--trial", "1")
    assert code == 2 and err == "tuner: error: --trial 1: it has no measured configuration (oom)\n"


def test_status_guesses_no_time_for_a_study_nobody_runs(
    reuse: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "status", *reuse)
    assert code == 0, err
    assert "left" not in out and "best so far: #15: SLO capacity 4504 tok/s, TTFT p99 527 ms" in out
    code, out, _ = cli(capsys, "status", *reuse, "--json")
    assert json.loads(out)[0]["time_left_s"] is None


def test_tuner_alone_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys)
    assert code == 0 and out.startswith("usage: tuner ") and not err
    code, out, _ = cli(capsys, "sim", "--help")
    assert code == 0 and out.startswith("usage: tuner sim ")


def test_what_was_sent_in_one_line() -> None:
    traffic = {
        "kind": "sharegpt",
        "requests": 1200,
        "conversations": 400,
        "input_tokens": {"p50": 210, "p90": 870, "p99": 1900},
        "output_tokens": 256,
        "arrivals": {"kind": "poisson"},
        "dropped": 3,
        "digest": "1a2b3c4d5e6f7a8b",
    }
    assert describe_traffic(traffic) == (
        "sent: sharegpt, 1,200 requests in 400 conversations, input tokens p50/p90/p99 210/870/1900, "
        "output 256 tokens, poisson arrivals, 3 dropped (digest 1a2b3c4d5e6f)"
    )
    assert describe_traffic(None) == ""


def test_an_unreadable_model_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m").mkdir()
    spec = {
        "name": "p",
        "model": "./m",
        "search": {},
        "workload": {"input_tokens": 8, "output_tokens": 4, "requests": 4},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    loaded = load_spec(tmp_path / "s.yaml")
    check_model_access(loaded)  # readable: nothing to say
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)  # what a non-root user meets on chmod 000
    with pytest.raises(SpecError, match="permission denied"):
        check_model_access(loaded)
    code, _, err = cli(capsys, "best", str(tmp_path / "s.yaml"), "--export", "cmd")
    assert code == 2 and err.count("\n") == 1 and "permission denied" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_a_chmod_000_model_folder(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "m").mkdir(parents=True)
    spec = {
        "name": "p",
        "model": "./models/m",
        "search": {},
        "workload": {"input_tokens": 8, "output_tokens": 4, "requests": 4},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    models.chmod(0)
    try:
        with pytest.raises(SpecError, match="permission denied"):
            check_model_access(load_spec(tmp_path / "s.yaml"))
    finally:
        models.chmod(0o755)
