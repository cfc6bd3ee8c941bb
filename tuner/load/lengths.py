"""The plan of a study's traffic before any text exists: per conversation, its turns' lengths or texts,
output lengths and think times. Pure given the workload and its files (read by :mod:`tuner.load.datasets`).

Draws come from one generator seeded by ``workload.seed`` (a stream apart from the prompts' text, so fixed
lengths keep the texts they always had), in a fixed order, so the same workload and files give the same
plan. Rules:

* turns per conversation: ``sessions.turns`` (1 without sessions); think times ``sessions.think_time_s``
  before each later turn;
* a dataset is sampled without replacement in a seeded order while it lasts, then again in a new order
  (every entry once before any repeats); a ``trace`` takes the file's entries in ``t`` order instead (the
  first ``count``), ``at_s`` counted from the earliest ``t``;
* first-turn input: ``input_tokens`` (a number or a law), else the dataset's length or text;
* later turns: ``input_tokens`` when given; else a ShareGPT entry's own later human turns while they last,
  then the prompt (or length) of another entry drawn at random;
* output lengths: ``output_tokens`` when given (overriding the dataset), else the dataset's count, or the
  token count of the ShareGPT reply that followed that turn (``reply`` below; the first turn's reply when a
  later turn has none).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tuner.config.workload import Workload
from tuner.errors import SpecError
from tuner.load.datasets import Dataset, Entry, read_dataset


@dataclass(frozen=True)
class TurnPlan:
    """One turn: a synthetic length (``input_tokens``) or a text (``text`` / ``messages``); an output length
    (``output_tokens``) or the ``reply`` whose token count it is."""

    input_tokens: int | None = None
    text: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    output_tokens: int | None = None
    reply: str | None = None
    think_s: float = 0.0
    line: int | None = None  # the dataset line it came from (for errors)


@dataclass(frozen=True)
class ConversationPlan:
    turns: tuple[TurnPlan, ...]
    at_s: float | None = None


def plan_traffic(w: Workload, count: int, base_dir: Path | None = None) -> list[ConversationPlan]:
    """``count`` conversation plans for ``w`` (see the module docstring)."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    rng = np.random.default_rng([w.seed, 12])
    ds = read_dataset(w.dataset, base_dir) if w.dataset is not None else None
    trace = w.arrivals.kind == "trace"
    if ds is not None and trace:
        entries = sorted(ds.entries, key=lambda e: (e.t if e.t is not None else -1.0, e.line))
        missing = next((e for e in entries if e.t is None), None)
        if missing is not None:
            raise _no_t(ds, missing)
        picked = entries[:count]
        count = len(picked)
    elif ds is not None:
        picked = [ds.entries[i] for i in _orders(rng, len(ds.entries), count)]
    else:
        picked = []
    sessions = w.sessions
    turns = _lengths(sessions.turns, count, rng, base_dir) if sessions else np.ones(count, dtype=np.int64)
    n_turns = int(turns.sum())
    firsts = _lengths(w.input_tokens, count, rng, base_dir) if w.input_tokens is not None else None
    outs = _lengths(w.output_tokens, n_turns, rng, base_dir) if w.output_tokens is not None else None
    n_later = n_turns - count
    later_in = _lengths(w.input_tokens, n_later, rng, base_dir) if w.input_tokens is not None else None
    other = rng.integers(0, len(ds.entries), size=n_later) if ds is not None else None
    think = _seconds(w, n_later, rng)
    t0 = min((e.t or 0.0) for e in picked) if trace and picked else 0.0
    plans = []
    k_out = k_later = 0
    for i in range(count):
        entry = picked[i] if ds is not None else None
        turn_list = [_first(entry, None if firsts is None else int(firsts[i]))]
        for j in range(1, int(turns[i])):
            if later_in is not None:
                t = TurnPlan(input_tokens=int(later_in[k_later]))
            else:
                assert ds is not None and other is not None and entry is not None
                t = _later_from(entry, j, ds.entries[int(other[k_later])])
            turn_list.append(_with(t, think_s=float(think[k_later])))
            k_later += 1
        if outs is not None:
            turn_list = [_with(t, output_tokens=int(outs[k_out + j])) for j, t in enumerate(turn_list)]
        else:
            turn_list = [_output_of(ds, entry, t) for t in turn_list]
        k_out += len(turn_list)
        at = (entry.t or 0.0) - t0 if trace and entry is not None else None
        plans.append(ConversationPlan(tuple(turn_list), at))
    return plans


def _with(t: TurnPlan, **kw: object) -> TurnPlan:
    return replace(t, **kw)  # type: ignore[arg-type]


def _orders(rng: np.random.Generator, size: int, count: int) -> list[int]:
    """Seeded permutations of ``range(size)``, one after the other, cut to ``count``."""
    out: list[int] = []
    while len(out) < count:
        out += rng.permutation(size).tolist()
    return out[:count]


def _lengths(v: object, n: int, rng: np.random.Generator, base_dir: Path | None) -> np.ndarray:
    if isinstance(v, int):
        return np.full(n, v, dtype=np.int64)
    return v.sample(n, rng, base_dir)  # type: ignore[attr-defined, no-any-return]


def _seconds(w: Workload, n: int, rng: np.random.Generator) -> np.ndarray:
    v = w.sessions.think_time_s if w.sessions is not None else 0.0
    if isinstance(v, int | float):
        return np.full(n, float(v))
    return v.sample(n, rng)


def _first(entry: Entry | None, length: int | None) -> TurnPlan:
    if length is not None or entry is None:
        return TurnPlan(input_tokens=length, line=entry.line if entry else None)
    if entry.input_tokens is not None:
        return TurnPlan(input_tokens=entry.input_tokens, line=entry.line)
    return TurnPlan(text=entry.prompt, messages=entry.messages, reply=entry.reply, line=entry.line)


def _later_from(entry: Entry, j: int, other: Entry) -> TurnPlan:
    """Turn ``j`` (1-based after the first) of ``entry``'s conversation, from the dataset."""
    if j - 1 < len(entry.later):
        own, reply = entry.later[j - 1]
        return TurnPlan(text=own, reply=reply if reply is not None else entry.reply, line=entry.line)
    if other.input_tokens is not None:
        return TurnPlan(input_tokens=other.input_tokens, output_tokens=other.output_tokens, line=other.line)
    text: str | None = other.prompt
    if text is None:  # a chat entry: its last user message is the new turn
        text = next((c for r, c in reversed(other.messages or ()) if r == "user"), None)
    return TurnPlan(text=text, output_tokens=other.output_tokens, reply=other.reply, line=other.line)


def _output_of(ds: Dataset | None, entry: Entry | None, t: TurnPlan) -> TurnPlan:
    """The output length from the dataset: the turn's own count, the entry's count, or its reply."""
    if t.output_tokens is not None or t.reply is not None:
        return t
    if entry is not None and entry.output_tokens is not None:
        return _with(t, output_tokens=entry.output_tokens)
    where = f"{ds.path}:{t.line}" if ds is not None else "workload"
    raise SpecError(where, "", "no output_tokens here and the workload gives none")


def _no_t(ds: Dataset, e: Entry) -> Exception:
    return SpecError(f"{ds.path}:{e.line}", "", "t is missing (arrivals.kind: trace needs a t on every line)")
