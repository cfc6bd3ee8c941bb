"""Dataset and length files: each format read, each malformed file refused in one line naming the file and
the line. Every file is written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tuner.config.paths import resolve_file
from tuner.config.workload import DatasetSpec, Workload
from tuner.errors import SpecError
from tuner.load.datasets import read_dataset, read_int_column

SHAREGPT = [
    {"id": "a", "conversations": [{"from": "human", "value": "Hello there"}, {"from": "gpt", "value": "Hi! How can I help?"},
                                  {"from": "human", "value": "Tell me a joke"}, {"from": "gpt", "value": "No."}]},
    {"id": "b", "conversations": [{"from": "human", "value": "only a question"}]},
    {"id": "c", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "Why?"},
                                  {"from": "gpt", "value": "Because."}]},
]  # fmt: skip


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"prompt": "one two", "output_tokens": 5}, {"messages": [{"role": "user", "content": "hi"}]}]
    write(tmp_path, "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = read_dataset(DatasetSpec(path="d.jsonl", format="jsonl"), tmp_path)
    assert [e.line for e in ds.entries] == [1, 2]
    assert ds.entries[0].prompt == "one two" and ds.entries[0].output_tokens == 5
    assert ds.entries[1].messages == (("user", "hi"),) and ds.entries[1].output_tokens is None


def test_sharegpt_array_and_json_lines(tmp_path: Path) -> None:
    write(tmp_path, "s.json", json.dumps(SHAREGPT, indent=1))
    ds = read_dataset(DatasetSpec(path="s.json", format="sharegpt"), tmp_path)
    assert ds.skipped == 1 and len(ds.entries) == 2
    a, c = ds.entries
    assert (a.prompt, a.reply, a.later) == (
        "Hello there",
        "Hi! How can I help?",
        (("Tell me a joke", "No."),),
    )
    assert (c.prompt, c.reply, c.later) == ("Why?", "Because.", ())
    assert a.line == 2 and c.line > a.line  # where each entry starts
    write(tmp_path, "s.jsonl", "\n".join(json.dumps(x) for x in SHAREGPT))
    ds2 = read_dataset(DatasetSpec(path="s.jsonl", format="sharegpt"), tmp_path)
    assert [e.prompt for e in ds2.entries] == ["Hello there", "Why?"] and [e.line for e in ds2.entries] == [
        1,
        3,
    ]


def test_lengths_csv_and_jsonl(tmp_path: Path) -> None:
    write(tmp_path, "l.csv", "output_tokens,input_tokens,t\n5,100,0.5\n\n6,200,1.25\n")
    ds = read_dataset(DatasetSpec(path="l.csv", format="lengths"), tmp_path)
    assert [(e.input_tokens, e.output_tokens, e.t, e.line) for e in ds.entries] == [
        (100, 5, 0.5, 2),
        (200, 6, 1.25, 4),
    ]
    write(tmp_path, "l.jsonl", '{"input_tokens": 3, "output_tokens": 4}\n')
    ds2 = read_dataset(DatasetSpec(path="l.jsonl", format="lengths"), tmp_path)
    assert (ds2.entries[0].input_tokens, ds2.entries[0].output_tokens, ds2.entries[0].t) == (3, 4, None)


def test_empirical_files(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", "3\n4\n")
    assert read_int_column("a.txt", None, tmp_path).tolist() == [3, 4]
    write(tmp_path, "b.csv", "input_tokens,output_tokens\n10,1\n20,2\n")
    assert read_int_column("b.csv", "output_tokens", tmp_path).tolist() == [1, 2]
    write(tmp_path, "c.csv", "n\n7\n8\n")
    assert read_int_column("c.csv", None, tmp_path).tolist() == [7, 8]
    with pytest.raises(SpecError, match=r"b\.csv:1: several columns .*give column"):
        read_int_column("b.csv", None, tmp_path)


@pytest.mark.parametrize(
    ("fmt", "text", "line", "reason"),
    [
        ("jsonl", '{"prompt": "a"}\n{"prompt": "b"\n', 2, "not JSON"),
        ("jsonl", '{"prompt": "a"}\n\n[1, 2]\n', 3, "expected a JSON object"),
        ("jsonl", '{"prompt": "a", "output_tokens": 0}\n', 1, "output_tokens must be a positive integer"),
        ("jsonl", '{"prompt": "a", "messages": []}\n', 1, "one of them"),
        ("jsonl", '{"text": "a"}\n', 1, "unknown key 'text'"),
        ("jsonl", '{"messages": [{"role": "user"}]}\n', 1, "string content"),
        ("sharegpt", '[\n {"conversations": []},\n {"x": 1}\n]', 3, "conversations list"),
        ("sharegpt", '[\n {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}\n]', 2, "unknown from 'robot'"),
        ("sharegpt", '[\n {"conversations": [{"from": "human", "value": 3}]}\n]', 2, "string value"),
        ("sharegpt", '[\n {"conversations": [}\n]', 2, "not JSON"),
        ("sharegpt", '[\n {"conversations": []}\n', 2, "not closed"),
        ("lengths", "input_tokens,output_tokens\n1,2\n3,x\n", 3, "output_tokens must be a positive integer"),
        ("lengths", "input_tokens,output_tokens\n1,2\n-3,4\n", 3, "input_tokens must be a positive integer"),
        ("lengths", "input_tokens,output_tokens\n1,2,3\n", 2, "3 cells, the header has 2"),
        ("lengths", "prompt,output_tokens\n1,2\n", 1, "the header must name the columns input_tokens,output_tokens[,t]"),
        ("lengths", "input_tokens,output_tokens,t\n1,2,soon\n", 2, "t must be a number"),
        ("lengths", '{"input_tokens": 1, "output_tokens": 2}\n{"input_tokens": 1}\n', 2, "output_tokens must be"),
    ],
)  # fmt: skip
def test_malformed_files_name_file_and_line(
    tmp_path: Path, fmt: str, text: str, line: int, reason: str
) -> None:
    path = write(tmp_path, f"bad.{fmt}", text)
    with pytest.raises(SpecError) as e:
        read_dataset(DatasetSpec(path=path.name, format=fmt), tmp_path)  # type: ignore[arg-type]
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert reason in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("text", "reason"),
    [("3\nfour\n", "a.txt:2: expected a positive integer, got 'four'"), ("n\n0\n", "a.txt:2: expected a positive"),
     ("x,y\n1\n", "a.txt:1: several columns"), ("", "a.txt: no values")],
)  # fmt: skip
def test_malformed_empirical_files(tmp_path: Path, text: str, reason: str) -> None:
    write(tmp_path, "a.txt", text)
    with pytest.raises(SpecError, match=reason.replace(".", r"\.")):
        read_int_column("a.txt", None, tmp_path)


def test_missing_file_and_empty_dataset(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^nope\.jsonl: no such file \(looked in "):
        read_dataset(DatasetSpec(path="nope.jsonl", format="jsonl"), tmp_path)
    write(tmp_path, "e.json", "[]")
    with pytest.raises(SpecError, match="no usable entries"):
        read_dataset(DatasetSpec(path="e.json", format="sharegpt"), tmp_path)
    write(tmp_path, "bin.jsonl", "")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe{}")
    with pytest.raises(SpecError, match="not UTF-8"):
        read_dataset(DatasetSpec(path="bin.jsonl", format="jsonl"), tmp_path)


def test_resolved_beside_the_study_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, cwd = tmp_path / "study", tmp_path / "cwd"
    study.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    write(cwd, "x.txt", "1\n")
    assert resolve_file("x.txt", study) == cwd / "x.txt"
    write(study, "x.txt", "2\n")
    assert resolve_file("x.txt", study) == study / "x.txt"


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    p = write(tmp_path, "a.txt", "1\n")
    assert read_int_column("a.txt", None, tmp_path).tolist() == [1]
    p.write_text("1\n2\n")
    assert read_int_column("a.txt", None, tmp_path).tolist() == [1, 2]


def test_dataset_accessors(tmp_path: Path) -> None:
    write(tmp_path, "s.json", json.dumps(SHAREGPT))
    w = Workload.model_validate({"dataset": {"path": "s.json", "format": "sharegpt"}, "requests": 4})
    assert w.max_output_tokens(tmp_path) == len(b"Hi! How can I help?")  # bytes: an upper bound of tokens
    assert w.mean_input_tokens(tmp_path) == pytest.approx(np.mean([11, 4]) / 4)
    write(tmp_path, "l.csv", "input_tokens,output_tokens\n10,3\n30,9\n")
    wl = Workload.model_validate({"dataset": {"path": "l.csv", "format": "lengths"}, "requests": 4})
    assert (
        wl.mean_input_tokens(tmp_path),
        wl.mean_output_tokens(tmp_path),
        wl.max_output_tokens(tmp_path),
    ) == (20, 6, 9)
