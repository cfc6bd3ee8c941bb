"""The traffic: exact token lengths for every synthetic request, dataset texts counted as the server counts
them, sessions, dropping over max_model_len, determinism, the digest and the summary. The tokenizer is the
tiny model's (``tuner make-model``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tuner.config.workload import Workload
from tuner.errors import SpecError
from tuner.load.lengths import plan_traffic
from tuner.load.prompts import Prompt, Tokenizer, build_prompts, load_tokenizer
from tuner.load.traffic import Traffic, build_traffic, traffic_digest


@pytest.fixture(scope="module")
def tok(tiny_model: Path) -> Tokenizer:
    return load_tokenizer(str(tiny_model))


def workload(**kw: Any) -> Workload:
    return Workload.model_validate({"requests": 10, **kw})


def served(tok: Tokenizer, p: Prompt) -> int:
    if p.messages is not None:
        text = tok.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        return len(tok.encode(text, add_special_tokens=False))
    return len(tok.encode(p.text or ""))


def build(
    w: Workload, tok: Tokenizer, count: int, base: Path, api: str = "completions", mml: int | None = None
) -> Traffic:
    return build_traffic(w, tok, count, api=api, max_model_len=mml, base_dir=base)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_fixed_lengths_send_what_they_always_sent(tok: Tokenizer, tmp_path: Path, api: str) -> None:
    w = workload(input_tokens=40, output_tokens=6, shared_prefix_tokens=10, seed=3)
    tr = build(w, tok, 20, tmp_path, api)
    old = build_prompts(tok, 20, 40, shared_prefix_tokens=10, seed=3, api=api)
    assert [c.turns[0].prompt for c in tr.conversations] == old
    assert all(
        len(c.turns) == 1 and c.turns[0].output_tokens == 6 and c.at_s is None for c in tr.conversations
    )
    assert tr.summary()["kind"] == "fixed" and tr.dropped == 0


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_every_synthetic_request_has_its_exact_length(tok: Tokenizer, tmp_path: Path, api: str) -> None:
    w = workload(
        input_tokens={"dist": "lognormal", "median": 60, "sigma": 0.7, "min": 20, "max": 400},
        output_tokens={"dist": "uniform", "low": 2, "high": 30},
        sessions={"turns": {"dist": "uniform", "low": 1, "high": 3}, "think_time_s": 0.5},
    )
    tr = build(w, tok, 60, tmp_path, api)
    plan_lengths = [t.input_tokens for c in plan_traffic(w, 60) for t in c.turns]
    assert [t.prompt.n_tokens for c in tr.conversations for t in c.turns] == plan_lengths
    for c in tr.conversations:
        first, *later = c.turns
        assert served(tok, first.prompt) == first.prompt.n_tokens
        for t in later:
            content = t.prompt.text if t.prompt.messages is None else t.prompt.messages[-1]["content"]
            assert len(tok.encode(content or "", add_special_tokens=False)) == t.prompt.n_tokens
            assert t.think_s == 0.5
    assert len({len(c.turns) for c in tr.conversations}) == 3


def test_deterministic_in_the_seed(tok: Tokenizer, tmp_path: Path) -> None:
    w = workload(input_tokens={"dist": "uniform", "low": 10, "high": 80}, output_tokens=4)
    assert build(w, tok, 30, tmp_path) == build(w, tok, 30, tmp_path)
    other = build(w.model_copy(update={"seed": 9}), tok, 30, tmp_path)
    assert other.conversations != build(w, tok, 30, tmp_path).conversations


def test_dropped_over_max_model_len(tok: Tokenizer, tmp_path: Path) -> None:
    w = workload(input_tokens={"dist": "uniform", "low": 10, "high": 100}, output_tokens=20)
    tr = build(w, tok, 200, tmp_path, mml=80)
    assert all(c.turns[0].prompt.n_tokens + 20 <= 80 for c in tr.conversations)
    assert tr.dropped == 200 - len(tr.conversations) and 40 < tr.dropped < 100  # 40 of 91 lengths are > 60
    sess = workload(input_tokens=30, output_tokens=10, sessions={"turns": 5})
    tr2 = build(sess, tok, 4, tmp_path, mml=100)  # 40 tokens a turn: two turns fit
    assert [len(c.turns) for c in tr2.conversations] == [2] * 4 and tr2.dropped == 12
    assert tr2.summary()["requests"] == 8


def test_jsonl_and_sharegpt_texts_are_counted(tok: Tokenizer, tmp_path: Path) -> None:
    rows = [{"prompt": "w1 w2 w3", "output_tokens": 4}, {"prompt": "w5 " * 50, "output_tokens": 2}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    w = workload(dataset={"path": "d.jsonl", "format": "jsonl"})
    for api in ("completions", "chat"):
        tr = build(w, tok, 6, tmp_path, api)
        for c in tr.conversations:
            p = c.turns[0].prompt
            assert served(tok, p) == p.n_tokens
        assert {c.turns[0].output_tokens for c in tr.conversations} == {4, 2}
    chat = [{"conversations": [{"from": "human", "value": "w1 w2"}, {"from": "gpt", "value": "w3 w4 w5 w6"},
                               {"from": "human", "value": "w7"}, {"from": "gpt", "value": "w8 w9"}]}]  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(chat))
    sg = workload(dataset={"path": "s.json", "format": "sharegpt"}, sessions={"turns": 2})
    tr = build(sg, tok, 1, tmp_path, "chat")
    (c,) = tr.conversations
    assert [t.output_tokens for t in c.turns] == [4, 2]  # the replies' token counts
    assert c.turns[1].prompt.messages == [{"role": "user", "content": "w7"}]
    assert tr.summary()["kind"] == "dataset:sharegpt"
    fixed_out = build(sg.model_copy(update={"output_tokens": 9}), tok, 1, tmp_path, "chat")
    assert [t.output_tokens for t in fixed_out.conversations[0].turns] == [9, 9]


def test_dataset_errors(tok: Tokenizer, tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "w1"}\n')
    with pytest.raises(SpecError, match=r"d\.jsonl:1: no output_tokens here and the workload gives none"):
        build(workload(dataset={"path": "d.jsonl", "format": "jsonl"}), tok, 2, tmp_path)
    (tmp_path / "m.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "w1"}], "output_tokens": 2}\n'
    )
    with pytest.raises(SpecError, match=r"m\.jsonl:1: messages need workload.api: chat"):
        build(workload(dataset={"path": "m.jsonl", "format": "jsonl"}), tok, 2, tmp_path)
    (tmp_path / "t.csv").write_text("input_tokens,output_tokens,t\n5,2,1\n5,2,\n")
    trace = workload(dataset={"path": "t.csv", "format": "lengths"}, arrivals={"kind": "trace"})
    with pytest.raises(SpecError, match=r"t\.csv:3: t is missing"):
        build(trace, tok, 2, tmp_path)


def test_lengths_and_a_trace(tok: Tokenizer, tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("input_tokens,output_tokens,t\n30,3,12.5\n10,1,10\n20,2,11\n")
    w = workload(dataset={"path": "t.csv", "format": "lengths"}, arrivals={"kind": "trace"})
    tr = build(w, tok, 100, tmp_path)
    assert [(c.at_s, c.turns[0].prompt.n_tokens, c.turns[0].output_tokens) for c in tr.conversations] == [
        (0.0, 10, 1), (1.0, 20, 2), (2.5, 30, 3)]  # fmt: skip
    assert all(served(tok, c.turns[0].prompt) == c.turns[0].prompt.n_tokens for c in tr.conversations)
    assert tr.summary()["arrivals"] == "trace"


def test_digest_follows_the_files_bytes_and_the_keys(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("10\n20\n")
    w = workload(input_tokens={"dist": "empirical", "file": "l.txt"}, output_tokens=4)
    d = traffic_digest(w, tmp_path)
    assert d == traffic_digest(w, tmp_path) and len(d) == 64
    assert traffic_digest(w.model_copy(update={"concurrency": 4}), tmp_path) == d  # how much is not what
    assert traffic_digest(w.model_copy(update={"seed": 1}), tmp_path) != d
    (tmp_path / "l.txt").write_text("10\n21\n")
    assert traffic_digest(w, tmp_path) != d
    (tmp_path / "l.txt").unlink()
    with pytest.raises(SpecError, match="no such file"):
        traffic_digest(w, tmp_path)


def test_summary(tok: Tokenizer, tmp_path: Path) -> None:
    w = workload(input_tokens={"dist": "uniform", "low": 10, "high": 50}, output_tokens=5, request_rate=3)
    tr = build(w, tok, 100, tmp_path)
    s = tr.summary()
    assert set(s) == {"kind", "conversations", "requests", "turns", "input_tokens", "output_tokens", "arrivals",
                      "dropped", "digest"}  # fmt: skip
    assert s["kind"] == "distribution" and s["arrivals"] == "poisson" and s["requests"] == 100
    assert 10 <= s["input_tokens"]["min"] <= s["input_tokens"]["p50"] <= s["input_tokens"]["max"] <= 50
    assert s["digest"] == tr.digest[:12] == traffic_digest(w, tmp_path)[:12]
    json.dumps(s)


def test_mixed_lengths_build_fast(tok: Tokenizer, tmp_path: Path) -> None:
    w = workload(
        input_tokens={"dist": "lognormal", "median": 300, "sigma": 0.8, "min": 16, "max": 2000},
        output_tokens=8,
    )
    t0 = time.process_time()
    tr = build(w, tok, 4096, tmp_path)
    assert len(tr.conversations) == 4096
    assert time.process_time() - t0 < 30.0  # about 3 s on one busy core (docs: make bench-load)
