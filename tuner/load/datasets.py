"""Readers of the traffic files a study names: datasets (``workload.dataset``) and empirical length files.

Formats (tuner ships no dataset; tests write their own):

* ``jsonl``: one JSON object a line with ``prompt`` (text) or ``messages`` (a chat: ``[{role, content}]``),
  and optionally ``output_tokens`` (a positive integer). Blank lines are skipped.
* ``sharegpt``: a JSON array (or JSON lines) of objects with ``conversations: [{from, value}]``; ``from`` is
  ``human``/``user``, ``gpt``/``assistant``/``chatgpt`` or ``system`` (ignored). The first human turn is the
  prompt, the reply after it gives the output length; later (human, reply) pairs are kept for sessions.
  An entry without a human turn followed by a reply is skipped (as ``vllm bench serve`` does) and counted.
* ``lengths``: a CSV with the header ``input_tokens,output_tokens[,t]`` (any column order), or JSON lines
  with those keys; ``t`` is a send time in seconds (for ``arrivals.kind: trace``).
* empirical length files: one integer per line, or a CSV with a header row (``column`` picks the column,
  needed when there are several).

A file is resolved beside the study file (``base_dir``), else in the working directory
(:func:`tuner.config.paths.resolve_file`). Every problem is a
:class:`~tuner.errors.SpecError` of one line, ``<file>:<line>: <what is wrong>`` (``<file>: ...`` when the
file as a whole is wrong). Reads are cached per file version (path, size, modification time).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.config.paths import resolve_file
from tuner.config.workload import DatasetSpec
from tuner.errors import SpecError

_USER_ROLES = frozenset({"human", "user"})
_REPLY_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bard", "bing", "model"})
#: rough UTF-8 bytes per token, for spec-time estimates of text lengths only (never for what is sent)
BYTES_PER_TOKEN_ESTIMATE = 4


@dataclass(frozen=True)
class Entry:
    """One request (or conversation) read from a dataset; ``line`` is where it starts in the file."""

    line: int
    prompt: str | None = None  # a text prompt (jsonl ``prompt``, sharegpt's first human turn)
    messages: tuple[tuple[str, str], ...] | None = None  # a chat as (role, content) pairs (jsonl)
    input_tokens: int | None = None  # lengths format: synthesise a prompt of this length
    output_tokens: int | None = None  # given by the file
    reply: str | None = None  # sharegpt: the reply whose token count is the output length
    later: tuple[tuple[str, str | None], ...] = ()  # sharegpt: later (user turn, reply) pairs
    t: float | None = None  # lengths format: send time in seconds


@dataclass(frozen=True)
class Dataset:
    """A read dataset: its resolved path, entries in file order, and entries skipped as unusable."""

    path: Path
    format: str
    entries: tuple[Entry, ...]
    skipped: int = 0


@dataclass(frozen=True)
class DatasetLengths:
    """Spec-time figures of a dataset (text lengths estimated, see :meth:`Workload.mean_input_tokens`)."""

    mean_input: float
    mean_output: float
    max_output: int


def _version(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(str(path), "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SpecError(str(path), "", f"cannot read: {e.strerror}") from None


def _bad(path: Path, line: int, what: str) -> SpecError:
    return SpecError(f"{path}:{line}", "", what)


def read_dataset(spec: DatasetSpec, base_dir: Path | None = None) -> Dataset:
    """The entries of ``spec``'s file (see the module docstring)."""
    path = resolve_file(spec.path, base_dir)
    return _read_dataset(*_version(path), spec.format)


@functools.lru_cache(maxsize=8)
def _read_dataset(path: str, _size: int, _mtime: int, fmt: str) -> Dataset:
    p = Path(path)
    text = _text(p)
    if fmt == "jsonl":
        entries = [_jsonl_entry(p, n, obj) for n, obj in _json_lines(p, text)]
        skipped = 0
    elif fmt == "sharegpt":
        got = [_sharegpt_entry(p, n, obj) for n, obj in _sharegpt_objects(p, text)]
        entries = [e for e in got if e is not None]
        skipped = len(got) - len(entries)
    else:
        entries = _lengths_entries(p, text)
        skipped = 0
    if not entries:
        raise SpecError(path, "", f"no usable entries in this {fmt} file")
    return Dataset(p, fmt, tuple(entries), skipped)


def _json_lines(path: Path, text: str) -> list[tuple[int, Any]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise _bad(path, n, f"not JSON: {e.msg} (column {e.colno})") from None
    return out


def _positive_int(path: Path, n: int, obj: dict[str, Any], key: str, required: bool) -> int | None:
    v = obj.get(key)
    if v is None and not required:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _bad(path, n, f"{key} must be a positive integer, got {v!r}")
    return v


def _jsonl_entry(path: Path, n: int, obj: Any) -> Entry:
    if not isinstance(obj, dict):
        raise _bad(path, n, f"expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - {"prompt", "messages", "output_tokens"}
    if unknown:
        raise _bad(path, n, f"unknown key {sorted(unknown)[0]!r} (prompt, messages, output_tokens)")
    out = _positive_int(path, n, obj, "output_tokens", required=False)
    if ("prompt" in obj) == ("messages" in obj):
        raise _bad(path, n, "give prompt (text) or messages (a chat), one of them")
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"]:
            raise _bad(path, n, "prompt must be a non-empty string")
        return Entry(line=n, prompt=obj["prompt"], output_tokens=out)
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise _bad(path, n, "messages must be a non-empty list of {role, content}")
    pairs = []
    for m in msgs:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise _bad(path, n, "each message needs a string role and a string content")
        pairs.append((m["role"], m["content"]))
    return Entry(line=n, messages=tuple(pairs), output_tokens=out)


def _sharegpt_objects(path: Path, text: str) -> list[tuple[int, Any]]:
    """The top-level objects of a JSON array (each with the line it starts on), or of JSON lines."""
    start = len(text) - len(text.lstrip())
    if not text[start:].startswith("["):
        return _json_lines(path, text)
    dec = json.JSONDecoder()
    out: list[tuple[int, Any]] = []
    pos = start + 1
    line = text.count("\n", 0, pos) + 1
    last = pos
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise _bad(path, text.rstrip().count("\n") + 1, "the JSON array is not closed")
        if text[pos] == "]":
            return out
        line += text.count("\n", last, pos)
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise _bad(path, e.lineno, f"not JSON: {e.msg} (column {e.colno})") from None
        out.append((line, obj))
        last, pos = pos, end


def _sharegpt_entry(path: Path, n: int, obj: Any) -> Entry | None:
    conv = obj.get("conversations") if isinstance(obj, dict) else None
    if not isinstance(conv, list):
        raise _bad(path, n, "expected an object with a conversations list")
    turns: list[tuple[str, str]] = []
    for t in conv:
        if not (isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)):
            raise _bad(path, n, "each turn of conversations needs a string from and a string value")
        role = t["from"].lower()
        if role in _USER_ROLES:
            turns.append(("user", t["value"]))
        elif role in _REPLY_ROLES:
            turns.append(("reply", t["value"]))
        elif role != "system":
            raise _bad(path, n, f"unknown from {t['from']!r} (human, gpt, system)")
    first = next((i for i, (r, v) in enumerate(turns) if r == "user" and v), None)
    if first is None or first + 1 >= len(turns) or turns[first + 1][0] != "reply":
        return None
    later: list[tuple[str, str | None]] = []
    rest = turns[first + 2 :]
    for i, (role, value) in enumerate(rest):
        if role == "user" and value:
            nxt = rest[i + 1] if i + 1 < len(rest) else None
            later.append((value, nxt[1] if nxt is not None and nxt[0] == "reply" else None))
    return Entry(line=n, prompt=turns[first][1], reply=turns[first + 1][1], later=tuple(later))


def _lengths_entries(path: Path, text: str) -> list[Entry]:
    if text.lstrip().startswith("{"):
        rows = [(n, obj) for n, obj in _json_lines(path, text)]
        for n, obj in rows:
            if not isinstance(obj, dict):
                raise _bad(path, n, f"expected a JSON object, got {type(obj).__name__}")
    else:
        rows = _csv_rows(path, text, required=("input_tokens", "output_tokens"), allowed=("t",))
    out = []
    for n, row in rows:
        t = row.get("t")
        if t is not None and t != "":
            try:
                t = float(t)
            except (TypeError, ValueError):
                raise _bad(path, n, f"t must be a number of seconds, got {t!r}") from None
            if not (math.isfinite(t) and t >= 0):
                raise _bad(path, n, f"t must be a finite number of seconds >= 0, got {t!r}")
        else:
            t = None
        ins = _positive_int(path, n, _ints(row), "input_tokens", required=True)
        outs = _positive_int(path, n, _ints(row), "output_tokens", required=True)
        out.append(Entry(line=n, input_tokens=ins, output_tokens=outs, t=t))
    return out


def _ints(row: dict[str, Any]) -> dict[str, Any]:
    """CSV cells are text: integers written as text become ints, other text is left for the error."""
    return {k: int(v) if isinstance(v, str) and v.strip().isdigit() else v for k, v in row.items()}


def _csv_rows(
    path: Path, text: str, required: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows = []
    for cells in reader:
        n = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        cells = [c.strip() for c in cells]
        if header is None:
            header = cells
            missing = [k for k in required if k not in header]
            unknown = [k for k in header if k not in required + allowed]
            if missing or unknown:
                want = ",".join(required) + "".join(f"[,{a}]" for a in allowed)
                raise _bad(path, n, f"the header must name the columns {want}, got {','.join(header)}")
            continue
        if len(cells) != len(header):
            raise _bad(path, n, f"{len(cells)} cells, the header has {len(header)}")
        rows.append((n, dict(zip(header, cells, strict=True))))
    return rows


def read_int_column(name: str, column: str | None, base_dir: Path | None = None) -> np.ndarray:
    """The positive integers of an empirical length file (module docstring), in file order."""
    path = resolve_file(name, base_dir)
    return _read_int_column(*_version(path), column)


@functools.lru_cache(maxsize=16)
def _read_int_column(path: str, _size: int, _mtime: int, column: str | None) -> np.ndarray:
    p = Path(path)
    lines = [(n, line.strip()) for n, line in enumerate(_text(p).splitlines(), start=1) if line.strip()]
    if not lines:
        raise SpecError(path, "", "no values in this file")
    values: list[tuple[int, str]]
    if lines[0][1].lstrip("-").isdigit() and column is None:
        values = lines
    else:
        n0, head = lines[0]
        cols = [c.strip() for c in head.split(",")]
        if column is None and len(cols) > 1:
            raise _bad(p, n0, f"several columns ({', '.join(cols)}): give column")
        want = column if column is not None else cols[0]
        if want not in cols:
            raise _bad(p, n0, f"no column {want!r} in the header ({', '.join(cols)})")
        k = cols.index(want)
        values = []
        for n, line in lines[1:]:
            cells = line.split(",")
            if len(cells) != len(cols):
                raise _bad(p, n, f"{len(cells)} cells, the header has {len(cols)}")
            values.append((n, cells[k].strip()))
    out = []
    for n, v in values:
        if not v.isdigit() or int(v) < 1:
            raise _bad(p, n, f"expected a positive integer, got {v!r}")
        out.append(int(v))
    if not out:
        raise SpecError(path, "", "no values in this file")
    return np.array(out, dtype=np.int64)


def dataset_lengths(spec: DatasetSpec, base_dir: Path | None = None) -> DatasetLengths:
    """Spec-time length figures of a dataset, without a tokenizer: counts the file gives are exact, text
    lengths are estimated (:data:`BYTES_PER_TOKEN_ESTIMATE`); ``max_output`` is an upper bound (a reply's
    UTF-8 bytes)."""
    ds = read_dataset(spec, base_dir)

    def text_len(e: Entry) -> int:
        if e.prompt is not None:
            return len(e.prompt.encode())
        return sum(len(c.encode()) for _, c in e.messages or ())

    ins = [e.input_tokens or text_len(e) / BYTES_PER_TOKEN_ESTIMATE for e in ds.entries]
    outs = [
        e.output_tokens or len((e.reply or "").encode()) for e in ds.entries if e.output_tokens or e.reply
    ]
    est = [
        e.output_tokens or len((e.reply or "").encode()) / BYTES_PER_TOKEN_ESTIMATE
        for e in ds.entries
        if e.output_tokens or e.reply
    ]
    return DatasetLengths(
        mean_input=float(np.mean(ins)),
        mean_output=float(np.mean(est)) if est else 0.0,
        max_output=max(max(outs, default=1), 1),
    )
