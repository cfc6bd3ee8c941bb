"""Bad input to the CLI: one line on stderr, exit 2, no traceback, and an existing study database left
byte-identical."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuner.cli.main import main
from tuner.cli.run import parse_duration
from tuner.config.spec import load_spec
from tuner.errors import UsageError
from tuner.measure.result import TrialResult
from tuner.search.loop import run_study

ROOT = Path(__file__).resolve().parents[2]

GOOD: dict[str, Any] = {
    "name": "cli",
    "model": "./m",
    "search": {
        "max-num-seqs": {"low": 2, "high": 64},
        "block-size": {"choices": [32, 64]},
        "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
    },
    "workload": {"input_tokens": 16, "output_tokens": 8, "requests": 8},
    "slo": {"ttft_p99_ms": 1000},
    "n_trials": 2,
}


def _fake(spec: Any, params: Any, **_: Any) -> TrialResult:
    from tuner.measure.metrics import Summary

    m = {"output_throughput_tok_s": 10.0, "ttft_ms": {"p99": 100.0}}
    return TrialResult(
        status="ok", summary=Summary.from_dict(m), flags=dict(params), argv=["vllm", "serve", "m"]
    )


@pytest.fixture(autouse=True)
def _no_vllm_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag check against vLLM's own parser imports vLLM (slow): tests/faults/test_bad_input.py has it."""
    monkeypatch.setenv("TUNER_CHECK_VLLM_FLAGS", "0")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a good study file (its model folder ./m exists) and its finished two-trial database."""
    d = tmp_path_factory.mktemp("cli")
    (d / "m").mkdir()
    (d / "good.yaml").write_text(yaml.safe_dump(GOOD))
    run_study(load_spec(d / "good.yaml"), trial_fn=_fake)
    assert (d / "cli.db").exists()
    return d


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.db"))}


def write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return str(folder / name)


def bad_files(folder: Path) -> dict[str, str]:
    def variant(**change: Any) -> str:
        return yaml.safe_dump({**GOOD, **change})

    return {
        "malformed": write(folder, "malformed.yaml", "name: cli\nsearch: {max-num-seqs: [1, 2\n"),
        "empty": write(folder, "empty.yaml", ""),
        "unknown_key": write(folder, "unknown.yaml", variant(colour="blue")),
        "low_gt_high": write(
            folder, "lowhigh.yaml", variant(search={"max-num-seqs": {"low": 64, "high": 2}})
        ),
        "memory_fraction": write(
            folder, "gmu.yaml", variant(search={"gpu-memory-utilization": {"low": 0.5, "high": 1.5}})
        ),
        "wrong_type": write(folder, "type.yaml", variant(n_trials="many")),
    }


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expect: int = 2) -> None:
    assert code == expect, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tuner: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "case", ["malformed", "empty", "unknown_key", "low_gt_high", "memory_fraction", "wrong_type"]
)
@pytest.mark.parametrize("command", ["run", "resume", "pareto", "measure"])
def test_bad_study_files(folder: Path, capsys: pytest.CaptureFixture[str], case: str, command: str) -> None:
    before = digest(folder)
    code, _out, err = run_cli(capsys, command, bad_files(folder)[case])
    assert_one_line_error(code, err)
    assert digest(folder) == before


@pytest.mark.parametrize(
    "args",
    [
        ["run", "{good}", "--storage", "nope://somewhere"],
        ["run", "{good}", "--storage", "sqlite://"],
        ["run", "{good}", "--storage", "::not a url::"],
        ["run", "{good}", "--storage", "sqlite:///:memory:"],
        ["run", "{good}", "--timeout", "soon"],
        ["run", "{good}", "--timeout", "-5m"],
        ["run", "{good}", "--n-trials", "0"],
        ["run", "{good}", "--n-trials", "many"],
        ["run", "{good}", "--frobnicate"],
        ["launch", "{good}"],
        ["pareto", "{good}", "--plot", "front.pdf"],
        ["pareto", "{good}", "--format", "xml"],
        ["best", "{good}"],
        ["best", "{good}", "--export", "cmd", "--pick", "cheapest"],
        ["status"],
        ["measure", "{good}", "--set", "max-num-seqs=fast"],
        ["measure", "{good}", "--set", "max-num-seqs=2.5"],
        ["measure", "{good}", "--set", "gpu-memory-utilization=true"],
        ["measure", "{good}", "--set", "noequals"],
        ["measure", "{good}", "--set", "max-num-seqs=[1, 2]"],
        ["measure", "{good}", "--set", "port=8000"],
        ["measure", "{good}", "--set", "Bad_Flag=1"],
        ["resume", "{other}"],
        ["run", "{other_objectives}"],
        ["pareto", "{good}", "--storage", "sqlite:///{folder}/missing.db"],
        ["run", "{good}", "--storage", "sqlite:///{folder}/foreign.db"],
    ],
)
def test_bad_arguments(folder: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    other = write(
        folder,
        "other.yaml",
        yaml.safe_dump({**GOOD, "name": "other-name", "storage": f"sqlite:///{folder}/cli.db"}),
    )
    objectives = write(
        folder,
        "objectives.yaml",
        yaml.safe_dump({**GOOD, "objectives": ["maximize output_throughput", "minimize e2e_p99"]}),
    )
    foreign = folder / "foreign.db"
    if not foreign.exists():
        con = sqlite3.connect(foreign)
        con.execute("CREATE TABLE notes (text TEXT)")
        con.commit()
        con.close()
    subst = {
        "good": str(folder / "good.yaml"),
        "other": other,
        "other_objectives": objectives,
        "folder": str(folder),
    }
    argv = [a.format(**subst) for a in args]
    before = digest(folder)
    code, _out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err)
    assert digest(folder) == before
    assert not (folder / "missing.db").exists()


def test_good_reads_leave_the_database_unchanged(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = str(folder / "good.yaml")
    before = digest(folder)
    for argv in (["pareto", good, "--format", "json"], ["status", good], ["best", good, "--export", "yaml"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, err
        assert out
    assert digest(folder) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_storage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "good.yaml").write_text(yaml.safe_dump(GOOD))
    ro.chmod(0o555)
    try:
        code, _out, err = run_cli(capsys, "run", str(ro / "good.yaml"))
    finally:
        ro.chmod(0o755)
    assert_one_line_error(code, err, expect=1)


@pytest.mark.parametrize(
    ("text", "seconds"), [("8h", 28800), ("30m", 1800), ("90s", 90), ("1h30m", 5400), ("45", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "8x", "1h 30m", "0", "-1"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_process_exit_status_and_no_traceback(folder: Path) -> None:
    malformed = bad_files(folder)["malformed"]
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", "run", malformed],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tuner: error: ") and proc.stderr.count("\n") == 1
    assert "malformed YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_uncreatable_folder_is_a_storage_error(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_cli(
        capsys, "run", str(folder / "good.yaml"), "--storage", "sqlite:////proc/tuner-nope/x.db"
    )
    assert_one_line_error(code, err, expect=1)


def test_postgres_without_driver_or_server_is_one_line(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://tuner@127.0.0.1:1/tuner"
    code, _out, err = run_cli(capsys, "status", "--storage", url)
    assert_one_line_error(code, err, expect=2 if "not installed" in err else 1)


def test_disk_full_mid_study_is_a_storage_error(tmp_path: Path) -> None:
    import optuna
    from sqlalchemy import event

    from tuner.errors import StorageError
    from tuner.search.storage import open_storage, storage_errors

    url = f"sqlite:///{tmp_path / 'full.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="full")
    with storage.engine.connect() as con:
        pages = con.exec_driver_sql("PRAGMA page_count").scalar()

    def cap(dbapi_connection: Any, _record: Any) -> None:  # the file may not grow: SQLite reports it full
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(storage.engine, "connect", cap)
    storage.engine.dispose()
    with pytest.raises(StorageError) as info, storage_errors(url):
        for _ in range(200):
            study.set_user_attr(f"k{_}", "x" * 4000)
    assert "disk is full" in str(info.value) and "\n" not in str(info.value)


def test_sim_hardware_overrides_the_prior_and_an_unknown_one_is_one_line(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuner.cli.run import with_sim_hardware
    from tuner.config.spec import Prior
    from tuner.search.prior import sim_target

    spec = load_spec(folder / "good.yaml")
    assert with_sim_hardware(spec, None) is spec
    h100 = with_sim_hardware(spec, "h100-sxm")
    assert h100.prior is not None and h100.prior.hardware == "H100" and not h100.prior.sim
    assert h100.prior.predict  # a file without prior gets predictions, no warm start
    warm = spec.model_copy(
        update={"prior": Prior(sim=True, hardware="L4"), "model": "meta-llama/Llama-3.1-8B-Instruct"}
    )
    l4_to_h200 = with_sim_hardware(warm, "H200")
    assert l4_to_h200.prior is not None and l4_to_h200.prior.sim and l4_to_h200.prior.hardware == "H200"
    assert sim_target(l4_to_h200).hardware.name == "H200"
    before = digest(folder)
    code, _out, err = run_cli(capsys, "run", str(folder / "good.yaml"), "--sim-hardware", "TPU-v9")
    assert_one_line_error(code, err)
    assert "TPU-v9" in err and "H200" in err  # the known profiles are listed
    assert digest(folder) == before
