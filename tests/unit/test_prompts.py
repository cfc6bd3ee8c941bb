"""Prompts have exactly the asked token count, as the server counts it, for several kinds of tokenizer.

Tokenizers: the project's tiny WordLevel model, byte-level BPEs (with a BOS like Llama 3, and with no
special tokens added like Qwen), a Unigram with a Metaspace pre-tokenizer (``tokenizers``) and a real
SentencePiece BPE model with byte fallback (Llama 2 style), all trained here without the hub.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as RawTokenizer
from tokenizers.implementations.sentencepiece_unigram import SentencePieceUnigramTokenizer
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

from tuner.errors import UsageError
from tuner.load.prompts import Prompt, Tokenizer, build_prompts, load_tokenizer

WORDS = [
    "the",
    "model",
    "serves",
    "tokens",
    "under",
    "load",
    "while",
    "the",
    "scheduler",
    "batches",
    "requests",
    "and",
    "the",
    "cache",
    "keeps",
    "blocks",
    "of",
    "keys",
    "and",
    "values",
    "for",
    "every",
    "sequence;",
    "latency",
    "grows",
    "when",
    "memory",
    "runs",
    "short,",
    "throughput",
    "falls",
    "if",
    "batches",
    "stay",
    "small.",
    "Über",
    "naïve",
    "café",
    "東京",
    "1234",
    "5678",
    "{json:",
    "[1,",
    "2]}",
    "<tag>",
    "x_y-z",
]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}<|end|>\n\n{{ m['content'] }}<|eot|>"
    "{% endfor %}{% if add_generation_prompt %}<|start|>assistant<|end|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


LLAMA2_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>{{ m['content'] }}<</SYS>>"
    "{% else %}{{ bos_token }}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}"
)


def corpus() -> list[str]:
    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "qu", "ex", "ba", "dé"]
    words = WORDS + ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(300)]
    return [" ".join(rng.choice(words, size=12).tolist()) for _ in range(1500)]


def byte_bpe(specials: list[str], bos: str | None, template: str) -> Any:
    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus(), trainer)
    if bos is not None:
        raw.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, raw.token_to_id(bos))]
        )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=bos, eos_token=specials[1])  # type: ignore[no-untyped-call]
    tok.add_special_tokens({"additional_special_tokens": specials[2:]})
    tok.chat_template = template
    return tok


def unigram() -> Any:
    sp = SentencePieceUnigramTokenizer()
    specials: list[str | AddedToken] = ["<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
    sp.train_from_iterator(
        iter(corpus()), vocab_size=400, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    raw: RawTokenizer = sp._tokenizer
    raw.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": specials[3:]})
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def sentencepiece_bpe(folder: Path) -> Tokenizer:
    """A Llama-2 style SentencePiece BPE (byte fallback, dummy prefix) through ``transformers``."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        vocab_size=500,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        minloglevel=2,
        unk_id=0,
        bos_id=1,
        eos_id=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    tok = LlamaTokenizer.from_pretrained(str(folder))
    tok.chat_template = LLAMA2_TEMPLATE
    return cast(Tokenizer, tok)


@pytest.fixture(scope="module")
def tokenizers(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tokenizer]:
    return {
        "wordlevel": load_tokenizer(str(tiny_model)),
        "sentencepiece": sentencepiece_bpe(tmp_path_factory.mktemp("sp")),
        "bpe-bos": byte_bpe(["<|bos|>", "<|eot|>", "<|start|>", "<|end|>"], "<|bos|>", LLAMA3_TEMPLATE),
        "bpe-plain": byte_bpe(["<|endoftext|>", "<|im_end|>", "<|im_start|>"], None, CHATML_TEMPLATE),
        "unigram": unigram(),
    }


KINDS = ["wordlevel", "bpe-bos", "bpe-plain", "unigram", "sentencepiece"]


def served_count(tok: Tokenizer, p: Prompt) -> int:
    """How vLLM counts a prompt: completions add special tokens, chat renders the template instead."""
    if p.messages is not None:
        text = tok.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        return len(tok.encode(text, add_special_tokens=False))
    assert p.text is not None
    return len(tok.encode(p.text))


def template_overhead(tok: Tokenizer) -> int:
    return served_count(tok, Prompt(text=None, messages=[{"role": "user", "content": ""}], n_tokens=0))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("api", ["completions", "chat"])
def test_exact_lengths(tokenizers: dict[str, Tokenizer], kind: str, api: str) -> None:
    tok = tokenizers[kind]
    shortest = template_overhead(tok) + 1 if api == "chat" else len(tok.encode("")) + 1
    for n in (shortest, 17, 301):
        if n < shortest:
            continue
        prompts = build_prompts(tok, 12, n, api=api, seed=n)
        assert len(prompts) == 12
        for p in prompts:
            assert p.n_tokens == n
            assert served_count(tok, p) == n, (kind, api, n, p)
            assert (p.text is None) == (api == "chat") and (p.messages is None) == (api == "completions")
        if n >= shortest + 8:  # (one-token contents from a small vocabulary may repeat)
            contents = [p.text if p.messages is None else p.messages[-1]["content"] for p in prompts]
            assert len(set(contents)) == len(contents)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_prefix_completions(tokenizers: dict[str, Tokenizer], kind: str) -> None:
    tok = tokenizers[kind]
    prompts = build_prompts(tok, 10, 120, shared_prefix_tokens=40, seed=1)
    ids = [tok.encode(p.text or "") for p in prompts]
    assert all(len(i) == 120 for i in ids)
    assert all(i[:40] == ids[0][:40] for i in ids)
    assert len({tuple(i[40:]) for i in ids}) == len(ids)


def test_shared_prefix_of_just_the_bos(tokenizers: dict[str, Tokenizer]) -> None:
    tok = tokenizers["bpe-bos"]
    prompts = build_prompts(tok, 3, 20, shared_prefix_tokens=1)
    assert all(len(tok.encode(p.text or "")) == 20 for p in prompts)


@pytest.mark.parametrize("kind", KINDS)
def test_shared_prefix_chat(tokenizers: dict[str, Tokenizer], kind: str) -> None:
    tok = tokenizers[kind]
    prompts = build_prompts(tok, 6, 150, shared_prefix_tokens=30, api="chat", seed=2)
    for p in prompts:
        assert p.messages is not None and served_count(tok, p) == 150
        assert p.messages[0]["role"] == "system" and p.messages[1]["role"] == "user"
        assert p.messages[0] == prompts[0].messages[0]  # type: ignore[index]
    system = prompts[0].messages[0]["content"]  # type: ignore[index]
    assert len(tok.encode(system, add_special_tokens=False)) == 30
    assert len({p.messages[1]["content"] for p in prompts if p.messages}) == 6


def test_seeded(tokenizers: dict[str, Tokenizer]) -> None:
    tok = tokenizers["bpe-bos"]
    a = build_prompts(tok, 3, 50, seed=4)
    assert a == build_prompts(tok, 3, 50, seed=4)
    assert a != build_prompts(tok, 3, 50, seed=5)


def test_impossible_lengths(tokenizers: dict[str, Tokenizer]) -> None:
    tok = tokenizers["bpe-bos"]
    with pytest.raises(ValueError, match="no room for content"):
        build_prompts(tok, 1, 1)  # the BOS alone
    with pytest.raises(ValueError, match="no room for content"):
        build_prompts(tok, 1, template_overhead(tok), api="chat")
    with pytest.raises(ValueError):
        build_prompts(tok, 1, 0)
    with pytest.raises(ValueError, match="shared_prefix_tokens"):
        build_prompts(tok, 1, 20, shared_prefix_tokens=20)
    with pytest.raises(ValueError, match="no room"):
        build_prompts(tok, 1, template_overhead(tok) + 5, shared_prefix_tokens=5, api="chat")
    with pytest.raises(ValueError, match="api"):
        build_prompts(tok, 1, 20, api="embeddings")


def test_chat_needs_a_template(tokenizers: dict[str, Tokenizer]) -> None:
    tok = byte_bpe(["<|bos|>", "<|eot|>"], "<|bos|>", LLAMA3_TEMPLATE)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        build_prompts(tok, 1, 20, api="chat")
    assert build_prompts(tok, 1, 20)[0].n_tokens == 20  # completions still work


def test_zero_prompts(tokenizers: dict[str, Tokenizer]) -> None:
    assert build_prompts(tokenizers["wordlevel"], 0, 20) == []


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot load the tokenizer"):
        load_tokenizer(str(tmp_path / "missing"))


def test_fast_enough(tokenizers: dict[str, Tokenizer]) -> None:
    t0 = time.process_time()
    prompts = build_prompts(tokenizers["wordlevel"], 300, 1024)
    assert len(prompts) == 300
    assert time.process_time() - t0 < 10.0  # about 0.5 s on one core; 1000 prompts in about 1.5 s
