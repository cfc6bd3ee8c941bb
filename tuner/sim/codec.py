"""The simulator's tokenisation: prompt token counts, chat templates, output text and prefix-cache block hashes.

:class:`Codec` uses the model's own tokenizer when its folder has one, else counts whitespace-separated words;
:func:`block_hashes` gives the chained block hashes the engine's prefix cache keys on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class Codec:
    """Token counting and output text. The model's own tokenizer when its folder has one (``tokenizer.json``
    read with the ``tokenizers`` library and the chat template rendered with Jinja, as ``transformers``
    does; other tokenizer formats through ``transformers``), else one token per whitespace-separated word
    (ids from a stable hash)."""

    def __init__(
        self, model: str, tokenizer: str | None = None, vocab_size: int = 32000, seed: int = 0
    ) -> None:
        self.vocab_size = vocab_size
        self.kind = "whitespace"
        self._fast: Any = None  # tokenizers.Tokenizer
        self._hf: Any = None  # transformers tokenizer
        self._template: Any = None  # jinja2 template
        self._specials: dict[str, str] = {}
        folder = Path(tokenizer or model).expanduser()
        special: set[int] = set()
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.vocab_size = int(self._fast.get_vocab_size())
            special = {i for i, t in self._fast.get_added_tokens_decoder().items() if t.special}
            self._load_template(folder)
            self.kind = "tokenizers"
        elif folder.is_dir():
            try:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                self.vocab_size = int(self._hf.vocab_size)
                special = set(self._hf.all_special_ids or [])
                self.kind = "transformers"
            except Exception:  # no tokenizer files, or none transformers can read: count words
                self._hf = None
        rng = np.random.default_rng(seed)
        self._rng = rng
        if self.kind == "whitespace":
            self.pool = [(int(i), f" w{int(i)}") for i in rng.integers(3, max(self.vocab_size, 4), size=256)]
        else:
            ids = [int(i) for i in rng.integers(0, self.vocab_size, size=512) if int(i) not in special][
                :256
            ] or [0]
            self.pool = [(i, " " + self.decode([i]).strip()) for i in ids]

    def _load_template(self, folder: Path) -> None:
        cfg: dict[str, Any] = {}
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cfg = {}
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            v = cfg.get(name)
            if isinstance(v, dict):
                v = v.get("content")
            if isinstance(v, str):
                self._specials[name] = v
        text = cfg.get("chat_template")
        jinja_file = folder / "chat_template.jinja"
        if jinja_file.is_file():
            text = jinja_file.read_text(encoding="utf-8")
        if isinstance(text, str) and text:
            import jinja2

            def raise_exception(msg: str) -> None:
                raise jinja2.TemplateError(msg)

            env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(text)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=add_special_tokens).ids)
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=add_special_tokens))
        return [_word_id(w, self.vocab_size) for w in text.split()]

    def encode_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        if self._template is not None:
            text = self._template.render(
                messages=list(messages), add_generation_prompt=True, **self._specials
            )
            return self.encode(text, add_special_tokens=False)
        if self._hf is not None and getattr(self._hf, "chat_template", None):
            text = self._hf.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            return self.encode(str(text), add_special_tokens=False)
        joined = " ".join(_content_text(m.get("content")) for m in messages)
        return self.encode(joined, add_special_tokens=self.kind != "whitespace")

    def decode(self, ids: Sequence[int]) -> str:
        if self._fast is not None:
            return str(self._fast.decode(list(ids)))
        if self._hf is not None:
            return str(self._hf.decode(list(ids)))
        return " ".join(f"w{i}" for i in ids)

    def sample_text(self, n: int) -> str:
        """Text of ``n`` generated tokens."""
        idx = self._rng.integers(0, len(self.pool), size=n)
        return "".join(self.pool[int(i)][1] for i in idx)


def _word_id(word: str, vocab: int) -> int:
    h = 2166136261
    for ch in word.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return 3 + h % max(vocab - 3, 1)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def block_hashes(tokens: Sequence[int], block_size: int) -> list[int]:
    """Chained hashes of the full blocks of ``tokens`` (block i's hash covers tokens 0 .. (i+1)*bs)."""
    out: list[int] = []
    prev = 0
    for i in range(len(tokens) // block_size):
        prev = hash((prev, tuple(tokens[i * block_size : (i + 1) * block_size])))
        out.append(prev)
    return out
