"""``tuner status``: the server-start summary (compiled key / new key, trials per hour) beside the progress
line, in text and JSON; nothing extra for a study stored before compile keys were recorded."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuner.cli.main import main
from tuner.config.spec import load_spec
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.report.status import describe_starts
from tuner.search.loop import run_study

ROOT = Path(__file__).resolve().parents[2]
H200 = ROOT / "results" / "h200"

STUDY: dict[str, Any] = {
    "name": "starts",
    "model": "./m",
    "server": {"args": {"max-model-len": 2048}},
    # one compile key for every trial (gpu-memory-utilization is not in it, the baseline's defaults match)
    "search": {"gpu-memory-utilization": {"low": 0.1, "high": 0.5}},
    "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
    "slo": {"ttft_p99_ms": 1000},
    "n_trials": 4,
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))  # never ~/.cache/vllm
    monkeypatch.setenv("TUNER_CHECK_VLLM_FLAGS", "0")


def fake(spec: Any, params: Mapping[str, Any], **_: Any) -> TrialResult:
    m = {"output_throughput_tok_s": 10.0, "ttft_ms": {"p99": 100.0}}
    # the first start compiles (3 s); later ones find the key compiled (1 s)
    startup = 1.0 if fake.calls else 3.0  # type: ignore[attr-defined]
    fake.calls += 1  # type: ignore[attr-defined]
    return TrialResult(status="ok", summary=Summary.from_dict(m), flags=dict(params), startup_s=startup)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_shows_the_server_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
    fake.calls = 0  # type: ignore[attr-defined]
    run_study(load_spec(tmp_path / "s.yaml"), trial_fn=fake)

    code, out, err = run_cli(capsys, "status", str(tmp_path / "s.yaml"), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    starts = row["starts"]
    assert starts["cached_starts"] == 3 and starts["new_key_starts"] == 1
    assert starts["cached_start_mean_s"] == pytest.approx(1.0)
    assert starts["new_key_start_mean_s"] == pytest.approx(3.0)
    assert starts["trials_per_hour"] > 0

    code, out, err = run_cli(capsys, "status", str(tmp_path / "s.yaml"))
    assert code == 0, err
    first, second = out.splitlines()
    assert first.startswith("starts: 4/4 finished")
    assert re.fullmatch(
        r"  server starts: 3 with a compiled key \(mean 1\.0 s\), 1 new \(mean 3\.0 s\); "
        r"\d+(\.\d)? trials per hour",
        second,
    ), second


def test_status_of_the_h200_studies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU study with variants (compile keys recorded) and the one before them (none recorded)."""
    reuse = tmp_path / "reuse.db"
    shutil.copy(H200 / "h200-llama8b-reuse.db", reuse)
    code, out, err = run_cli(capsys, "status", "--storage", f"sqlite:///{reuse}")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("h200-llama8b-reuse: 20/")
    assert lines[1] == (
        "  server starts: 9 with a compiled key (mean 68.6 s), 10 new (mean 109.2 s); 26.5 trials per hour"
    )

    old = tmp_path / "old.db"
    shutil.copy(H200 / "h200-llama8b.db", old)
    code, out, err = run_cli(capsys, "status", "--storage", f"sqlite:///{old}")
    assert code == 0, err
    assert len(out.splitlines()) == 1 and "server starts" not in out
    code, out, err = run_cli(capsys, "status", "--storage", f"sqlite:///{old}", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["starts"] is None


@pytest.mark.parametrize(
    ("starts", "line"),
    [
        (None, None),
        (
            {
                "cached_starts": 3,
                "new_key_starts": 6,
                "cached_start_mean_s": 81.63,
                "new_key_start_mean_s": 110.94,
                "trials_per_hour": 26.84,
            },
            "3 with a compiled key (mean 81.6 s), 6 new (mean 110.9 s); 26.8 trials per hour",
        ),
        (
            {
                "cached_starts": 0,
                "new_key_starts": 2,
                "cached_start_mean_s": None,
                "new_key_start_mean_s": 95.0,
                "trials_per_hour": 30.0,
            },
            "2 new (mean 95.0 s); 30.0 trials per hour",
        ),
        (
            {
                "cached_starts": 1,
                "new_key_starts": 0,
                "cached_start_mean_s": 50.0,
                "new_key_start_mean_s": None,
                "trials_per_hour": None,
            },
            "1 with a compiled key (mean 50.0 s)",
        ),
        (
            {
                "cached_starts": 0,
                "new_key_starts": 0,
                "cached_start_mean_s": None,
                "new_key_start_mean_s": None,
                "trials_per_hour": 1200.0,
            },
            "none healthy; 1200.0 trials per hour",
        ),
    ],
)
def test_starts_line(starts: dict[str, Any] | None, line: str | None) -> None:
    assert describe_starts(starts) == line
