"""Prompts of an exact token length, built with the served model's own tokenizer.

Contract of :func:`build_prompts`: every prompt counts exactly ``input_tokens`` tokens as vLLM will count
it —

* completions: ``len(tokenizer.encode(text))`` with the tokenizer's special tokens (BOS ...) added, as vLLM
  does for ``/v1/completions``;
* chat: the chat template rendered with ``add_generation_prompt=True`` and then encoded *without* adding
  special tokens (the template writes them), as vLLM does for ``/v1/chat/completions``.

No vocabulary is assumed: content is random token ids drawn from the tokenizer's own vocabulary (special
and unstable tokens skipped), decoded to text, re-encoded and trimmed or extended until the count is exact.
Each prompt has its own random content (so prefix caching cannot fake a speed-up) except, when
``shared_prefix_tokens`` is given, a common prefix: the first ``shared_prefix_tokens`` tokens of a
completions prompt (BOS included), or a system message of that many tokens for chat.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from tuner.errors import UsageError

Messages = list[dict[str, str]]

#: how many vocabulary entries are tried as prompt material (enough variety, bounded start-up cost)
_POOL_CANDIDATES = 8192
_MIN_POOL = 16
_FIT_ROUNDS = 64
_PREFIX_RETRIES = 4


@dataclass(frozen=True)
class Prompt:
    """One request's input. Exactly one of ``text`` (completions) and ``messages`` (chat) is set."""

    text: str | None
    messages: list[dict[str, str]] | None
    n_tokens: int


class Tokenizer(Protocol):
    """The part of a ``transformers`` tokenizer this module uses."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def all_special_ids(self) -> list[int]: ...

    def encode(self, text: str, *, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = ...) -> str | list[str]: ...

    def apply_chat_template(
        self, conversation: Messages, *, tokenize: bool = ..., add_generation_prompt: bool = ...
    ) -> Any: ...


def load_tokenizer(name_or_path: str) -> Tokenizer:
    """The model's tokenizer via ``transformers.AutoTokenizer`` (a local folder is read offline).

    Raises :class:`~tuner.errors.UsageError` when it cannot be loaded.
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=os.path.isdir(name_or_path))
    except Exception as e:
        raise UsageError(f"cannot load the tokenizer of {name_or_path!r}: {e}") from e
    return cast(Tokenizer, tok)


def build_prompts(
    tokenizer: Tokenizer,
    count: int,
    input_tokens: int,
    *,
    shared_prefix_tokens: int = 0,
    seed: int = 0,
    api: str = "completions",
) -> list[Prompt]:
    """``count`` prompts of exactly ``input_tokens`` tokens each (see the module docstring).

    Raises ``ValueError`` when the length is impossible (no room for content after the special tokens,
    the chat template and the shared prefix) or the tokenizer cannot reach it.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    return PromptFactory(tokenizer, seed).prompts([input_tokens] * count, shared_prefix_tokens, api)


class PromptFactory:
    """Prompts of given exact lengths from one tokenizer and one seeded random stream.

    The vocabulary pool is made once, so prompts of many different lengths cost about what prompts of one
    length cost. Calls draw from the same stream in order: the same calls with the same seed give the same
    texts. ``PromptFactory(tok, seed).prompts([n] * count, ...)`` is :func:`build_prompts`.
    """

    def __init__(self, tokenizer: Tokenizer, seed: int = 0) -> None:
        self._b = _Builder(tokenizer, np.random.default_rng(seed))

    def prompts(
        self, lengths: Sequence[int], shared_prefix_tokens: int = 0, api: str = "completions"
    ) -> list[Prompt]:
        """One prompt per entry of ``lengths``, each exactly that many tokens as the server counts it;
        the first ``shared_prefix_tokens`` are common to all of them (module docstring)."""
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {api!r}")
        if shared_prefix_tokens < 0:
            raise ValueError("shared_prefix_tokens must not be negative")
        if any(n < 1 for n in lengths):
            raise ValueError(f"input_tokens must be positive, got {min(lengths)}")
        if api == "chat":
            return self._b.chat_prompts(lengths, shared_prefix_tokens)
        return self._b.completion_prompts(lengths, shared_prefix_tokens)

    def contents(self, lengths: Sequence[int]) -> list[str]:
        """Texts of exactly ``lengths[i]`` tokens each, encoded without special tokens: the new message of
        a later turn in a session (the server counts it inside the growing history)."""
        if any(n < 1 for n in lengths):
            raise ValueError(f"a message needs at least one token, got {min(lengths)}")
        plain = self._b.plain
        return [self._b.fit(lambda t: len(plain(t)), n, f"a message of {n} tokens", 0) for n in lengths]


def served_tokens(tokenizer: Tokenizer, prompt: str | Messages, api: str) -> int:
    """How many tokens the server counts for ``prompt``: completions encode the text with the special
    tokens; chat renders the template (with the generation prompt) and encodes it without them. A text
    sent to the chat API is one user message."""
    if api == "chat":
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return len(tokenizer.encode(_render(tokenizer, messages), add_special_tokens=False))
    if not isinstance(prompt, str):
        raise ValueError("chat messages need api: chat")
    return len(tokenizer.encode(prompt))


class _Builder:
    """Random token material from one tokenizer, and the fit-to-length loop."""

    def __init__(self, tok: Tokenizer, rng: np.random.Generator) -> None:
        self.tok = tok
        self.rng = rng
        self.stable, self.pool = _token_pools(tok, rng)
        #: re-encoded tokens per sampled token (merges across sampled tokens change the count) ...
        self.yield_ratio = 1.0
        #: ... and whether it was ever other than 1 (if not, sample exactly: no trimming round)
        self.drifts = False

    def sample(self, n: int, *, stable: bool = False) -> list[int]:
        pool = self.stable if stable and len(self.stable) else self.pool
        return [int(i) for i in pool[self.rng.integers(0, len(pool), size=max(n, 0))]]

    def decode(self, ids: list[int]) -> str:
        text = self.tok.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str), "decode() of one sequence returns one text"
        return text

    def plain(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def fit(
        self,
        count: Callable[[str], int],
        target: int,
        what: str,
        base: int | None = None,
        content_ids: Callable[[str], list[int]] | None = None,
    ) -> str:
        """Random content whose ``count`` is exactly ``target``.

        ``base`` is ``count("")`` if known; ``content_ids(text)``, called right after ``count(text)``, gives
        the text's own token ids (default: encode it again without special tokens).
        """
        base = count("") if base is None else base
        content_ids = content_ids or self.plain
        if base >= target:
            raise ValueError(f"{what}: {target} tokens leave no room for content ({base} tokens without it)")
        need = target - base
        # when re-encoding drifts, overshoot a little: trimming lands exactly far more often than extending
        ids = self.sample(
            math.ceil(need / self.yield_ratio * 1.02) + 1 if self.drifts else need, stable=need <= 2
        )
        for i in range(_FIT_ROUNDS):
            late = i >= _FIT_ROUNDS // 4  # struggling: extend only with tokens that re-encode alone
            text = self.decode(ids)
            n = count(text)
            if n == target:
                return text
            cur = content_ids(text)
            if i == 0 and len(ids) >= 32:
                self.drifts = self.drifts or len(cur) != len(ids)
                self.yield_ratio = 0.5 * self.yield_ratio + 0.5 * max(len(cur), 1) / len(ids)
            diff = target - n
            if diff > 0:
                ids = cur + self.sample(diff, stable=late or need == 1)
            elif len(cur) + diff > 0:
                ids = cur[: len(cur) + diff]
            else:
                ids = self.sample(1, stable=True)
        raise ValueError(f"{what}: could not reach exactly {target} tokens with this tokenizer")

    def completion_prompts(self, lengths: Sequence[int], prefix_tokens: int) -> list[Prompt]:
        encode = self.tok.encode
        prefix = ""
        prefix_ids: list[int] = []
        if lengths and prefix_tokens >= min(lengths):
            raise ValueError("shared_prefix_tokens must be smaller than input_tokens")
        if prefix_tokens > len(encode("")):  # (a BOS alone is shared anyway)
            prefix = self.fit(lambda t: len(encode(t)), prefix_tokens, "shared prefix")
            prefix_ids = list(encode(prefix))
            prefix += self.seam(prefix, prefix_ids)

        last: list[int] = []

        def full(t: str) -> int:
            nonlocal last
            last = list(encode(prefix + t))
            return len(last)

        special = set(self.tok.all_special_ids)

        def unprefixed_ids(t: str) -> list[int]:  # ``last`` holds encode(t): drop the BOS/EOS it added
            return [i for i in last if i not in special]

        content = None if prefix else unprefixed_ids
        base = full("")
        out = []
        for input_tokens in lengths:
            what = f"a prompt of {input_tokens} tokens"
            text = self.fit(full, input_tokens, what, base, content)
            for _retry in range(_PREFIX_RETRIES):  # a merge at the seam would change the prefix's tokens
                if last[: len(prefix_ids)] == prefix_ids:  # ``last`` encoded ``prefix + text``
                    break
                text = self.fit(full, input_tokens, what, base, content)
            out.append(Prompt(text=prefix + text, messages=None, n_tokens=input_tokens))
        return out

    def seam(self, prefix: str, prefix_ids: list[int]) -> str:
        """A separator after ``prefix`` that keeps its tokens intact whatever content follows."""
        k = len(prefix_ids)
        samples = [self.decode(self.sample(8)) for _ in range(8)]
        for sep in ("", " ", "\n", "\n\n", ". "):
            if all(list(self.tok.encode(prefix + sep + s))[:k] == prefix_ids for s in samples):
                return sep
        return " "

    def chat_prompts(self, lengths: Sequence[int], prefix_tokens: int) -> list[Prompt]:
        tok = self.tok
        if getattr(tok, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; use api='completions'")
        system: Messages = []
        if lengths and prefix_tokens >= min(lengths):
            raise ValueError("shared_prefix_tokens must be smaller than input_tokens")
        if prefix_tokens:
            sys_text = self.fit(lambda t: len(self.plain(t)), prefix_tokens, "system prompt")
            system = [{"role": "system", "content": sys_text}]

        def rendered(t: str) -> int:
            return len(
                tok.encode(_render(tok, [*system, {"role": "user", "content": t}]), add_special_tokens=False)
            )

        base = rendered("")
        out = []
        for input_tokens in lengths:
            what = f"a chat prompt of {input_tokens} tokens"
            text = self.fit(rendered, input_tokens, what, base)
            messages = [*system, {"role": "user", "content": text}]
            out.append(Prompt(text=None, messages=messages, n_tokens=input_tokens))
        return out


def _render(tok: Tokenizer, messages: Messages) -> str:
    try:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja errors, e.g. a template without a system role
        raise ValueError(f"the chat template cannot render these messages: {e}") from e
    if not isinstance(text, str):
        raise ValueError("apply_chat_template(tokenize=False) did not return text")
    return text


def _token_pools(tok: Tokenizer, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary ids to draw content from: ``(stable, pool)``; all decode, alone, to printable text.

    ``stable`` ids encode back to themselves alone (content made of them re-encodes to about as many
    tokens as were drawn). ``pool`` is ``stable`` when that is a fair share of the vocabulary, else it
    adds the ids whose text encodes to other ordinary ids (SentencePiece pieces without a leading ``▁``).
    """
    special = set(tok.all_special_ids)
    vocab = tok.vocab_size
    if vocab <= _POOL_CANDIDATES:
        candidates = np.arange(vocab)
    else:
        candidates = rng.choice(vocab, size=_POOL_CANDIDATES, replace=False)
    stable: list[int] = []
    usable: list[int] = []
    for i in candidates.tolist():
        if i in special:
            continue
        s = tok.decode([i], skip_special_tokens=True)
        if not isinstance(s, str) or not s.strip() or "\ufffd" in s or not s.isprintable():
            continue
        ids = list(tok.encode(s, add_special_tokens=False))
        if ids == [i]:
            stable.append(i)
        elif ids and not special.intersection(ids):
            usable.append(i)
    keep = stable if len(stable) >= max(_MIN_POOL, len(usable) // 4) else stable + usable
    if len(keep) < _MIN_POOL:
        raise ValueError(f"the tokenizer has too few plain-text tokens to build prompts ({len(keep)})")
    return np.array(sorted(stable), dtype=np.int64), np.array(sorted(keep), dtype=np.int64)
