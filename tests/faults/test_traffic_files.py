"""Malformed traffic files (issue 12), each through the real CLI entry point: `tuner run` prints one line
naming the file, the line and what is wrong, exits 2, starts no server, and leaves the study database as it
was (byte-identical when it existed, absent when it did not); a dataset file changed after the study
started stops `tuner resume` with one line. The files are written here; the server is the fake one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import FakeStudy, run_tuner, write_study
from tuner.cli.main import main

pytestmark = pytest.mark.timeout(300)

GOOD_JSONL = '{"prompt": "w1 w2 w3", "output_tokens": 4}\n{"prompt": "w4 w5", "output_tokens": 3}\n'

#: case -> (file name, format (None: an empirical input_tokens file), text, the line it names, words)
CASES: dict[str, tuple[str, str | None, str, int, list[str]]] = {
    "jsonl: not JSON": ("d.jsonl", "jsonl", '{"prompt": "a"}\n{"prompt": "b",\n', 2, ["not JSON"]),
    "jsonl: bad output_tokens": ("d.jsonl", "jsonl", '{"prompt": "a"}\n\n{"prompt": "b", "output_tokens": -3}\n',
                                 3, ["output_tokens", "positive integer"]),
    "jsonl: no prompt": ("d.jsonl", "jsonl", '{"prompt": "a"}\n{"output_tokens": 4}\n', 2, ["prompt", "messages"]),
    "jsonl: unknown key": ("d.jsonl", "jsonl", '{"prompt": "a", "answer": "b"}\n', 1, ["unknown key 'answer'"]),
    "jsonl: messages without api chat": (
        "d.jsonl", "jsonl", '{"prompt": "a"}\n{"messages": [{"role": "user", "content": "b"}]}\n', 2,
        ["messages need workload.api: chat"]),
    "sharegpt: array not closed": (
        "s.json", "sharegpt", '[\n{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}\n',
        2, ["not closed"]),
    "sharegpt: no conversations": (
        "s.json", "sharegpt",
        '[\n{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},\n{"id": 7}\n]\n',
        3, ["conversations list"]),
    "sharegpt: unknown from": (
        "s.json", "sharegpt", '[{"conversations": [{"from": "robot", "value": "a"}]}]\n', 1, ["unknown from 'robot'"]),
    "lengths: bad header": ("l.csv", "lengths", "in,out\n10,2\n", 1, ["header", "input_tokens,output_tokens"]),
    "lengths: not a number": ("l.csv", "lengths", "input_tokens,output_tokens\n10,2\n12,two\n", 3,
                              ["output_tokens", "positive integer", "'two'"]),
    "lengths: short row": ("l.csv", "lengths", "input_tokens,output_tokens\n10,2\n12\n", 3, ["1 cells"]),
    "lengths: trace without t": ("l.csv", "trace", "input_tokens,output_tokens,t\n10,2,0.5\n12,3,\n", 3,
                                 ["t is missing"]),
    "empirical: not an integer": ("e.txt", None, "10\n20\n2.5\n", 3, ["positive integer", "'2.5'"]),
}  # fmt: skip


def _study(tmp_path: Path, tiny_model: Path, name: str, fmt: str | None) -> FakeStudy:
    """The fake server's study, its lengths or prompts from ``name`` (null keys: the helper's defaults off)."""
    workload: dict[str, Any]
    if fmt is None:
        workload = {"input_tokens": {"dist": "empirical", "file": name}}
    elif fmt == "trace":
        workload = {"input_tokens": None, "output_tokens": None, "concurrency": None,
                    "dataset": {"path": name, "format": "lengths"}, "arrivals": {"kind": "trace"}}  # fmt: skip
    else:
        workload = {"input_tokens": None, "dataset": {"path": name, "format": fmt}}
    return write_study(tmp_path, tiny_model, n_trials=2, workload=workload)


def _db_state(study: FakeStudy) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(study.db.parent.glob("*.db*"))}


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], words: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("tuner: error: "), err
    assert "Traceback" not in out + err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_file_is_refused_with_its_line_and_nothing_stored(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    name, fmt, text, line, words = CASES[case]
    study = _study(tmp_path, tiny_model, name, fmt)
    (tmp_path / name).write_text(text)
    where = f"{tmp_path / name}:{line}: "
    for command in ("run", "measure"):
        _refused([command, str(study.path)], capsys, [where, *words])
    assert not study.db.exists()  # no study created
    assert study.events() == []  # no server started


def test_a_file_broken_after_the_study_started_leaves_the_database_byte_identical(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path, tiny_model, "d.jsonl", "jsonl")
    (tmp_path / "d.jsonl").write_text(GOOD_JSONL)
    assert main(["run", str(study.path), "--n-trials", "1"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    before = _db_state(study)
    (tmp_path / "d.jsonl").write_text(GOOD_JSONL + '{"prompt": ""}\n')
    for command in ("run", "resume"):
        _refused([command, str(study.path)], capsys, [f"{tmp_path / 'd.jsonl'}:3: ", "non-empty string"])
    assert _db_state(study) == before


def test_a_changed_dataset_stops_the_resume_until_accepted(tmp_path: Path, tiny_model: Path) -> None:
    """Through the real process: the first run sends the file's prompts to the (fake) server; after the file
    changes, resume refuses with one line and the database unchanged; --accept-changes goes on."""
    study = _study(tmp_path, tiny_model, "d.jsonl", "jsonl")
    (tmp_path / "d.jsonl").write_text(GOOD_JSONL)
    first = run_tuner("run", str(study.path), "--n-trials", "1")  # the budget: 1 (stored)
    assert first.returncode == 0, first.stderr[-3000:]
    (trial,) = study.trials()
    traffic = json.dumps(trial.user_attrs)
    assert "dataset:jsonl" in traffic  # what was sent, stored with the trial
    before = _db_state(study)
    (tmp_path / "d.jsonl").write_text(GOOD_JSONL.replace("w4 w5", "w4 w5 w6"))
    refused = run_tuner("resume", str(study.path))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "the traffic changed since the study started" in lines[0] and "d.jsonl" in lines[0], lines[0]
    assert "--accept-changes" in lines[0] and "Traceback" not in refused.stderr
    assert _db_state(study) == before
    accepted = run_tuner("resume", str(study.path), "--accept-changes", "--n-trials", "2")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert len(study.trials()) == 2
