"""The traffic a study sends: its conversations, built once per study from the workload, its files and the
served model's tokenizer. Pure given the tokenizer (files are read through :mod:`tuner.load.datasets`).

:func:`build_traffic` turns :func:`tuner.load.lengths.plan_traffic`'s plan into
:class:`~tuner.load.conversation.Conversation`\\ s:

* synthetic first turns are prompts of exact length (:class:`tuner.load.prompts.PromptFactory`, seeded by
  ``workload.seed``): without a dataset, sessions or distributions this is exactly
  :func:`~tuner.load.prompts.build_prompts`' output, so older studies send the same prompts;
* dataset texts keep their text; ``Prompt.n_tokens`` is their count as the server counts it (a text sent to
  the chat API is one user message; a ``messages`` entry needs ``api: chat``);
* later turns of a session carry only their new user message (the sender adds the history): its
  ``n_tokens`` is the message's own count, without special tokens;
* an output length from a ShareGPT reply is the reply's token count (without special tokens).

Requests that do not fit ``max_model_len`` are dropped and counted: a first turn whose prompt plus output
exceeds it drops its conversation; a later turn whose estimated history (earlier prompts, outputs and new
messages, plus the chat template's cost of a message) plus its own prompt and output exceeds it ends its
conversation there. Every request not sent counts in ``dropped``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tuner.config.paths import resolve_file
from tuner.config.workload import Empirical, Workload
from tuner.errors import SpecError, UsageError
from tuner.load.conversation import Conversation, Turn
from tuner.load.datasets import read_dataset
from tuner.load.lengths import ConversationPlan, TurnPlan, plan_traffic
from tuner.load.prompts import Prompt, PromptFactory, Tokenizer, served_tokens

#: the workload keys that define what is sent (not how much, nor how fast)
TRAFFIC_KEYS = ("api", "input_tokens", "output_tokens", "shared_prefix_tokens", "dataset", "sessions",
                "arrivals", "tokenizer", "seed")  # fmt: skip
_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Traffic:
    """What a study sends: conversations (single requests are one-turn conversations)."""

    conversations: tuple[Conversation, ...]
    dropped: int  # requests that did not fit max_model_len (prompt + output), counted, not sent
    digest: str  # == traffic_digest(...) of the inputs
    kind: str = "fixed"  # fixed | distribution | dataset:<format>
    arrivals: str = "poisson"

    @property
    def requests(self) -> int:
        return sum(len(c.turns) for c in self.conversations)

    @property
    def max_output_tokens(self) -> int:
        """The largest ``max_tokens`` of any request (1 when there are none)."""
        return max((t.output_tokens for c in self.conversations for t in c.turns), default=1)

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready account of the traffic: token counts are per request (a later turn's are its
        new message's), percentiles by numpy's default (linear) rule."""
        turns = [len(c.turns) for c in self.conversations]
        ins = [t.prompt.n_tokens for c in self.conversations for t in c.turns]
        outs = [t.output_tokens for c in self.conversations for t in c.turns]
        return {
            "kind": self.kind,
            "conversations": len(self.conversations),
            "requests": self.requests,
            "turns": {
                "mean": round(float(np.mean(turns)), 3) if turns else 0.0,
                "max": max(turns, default=0),
            },
            "input_tokens": _spread(ins),
            "output_tokens": _spread(outs),
            "arrivals": self.arrivals,
            "dropped": self.dropped,
            "digest": self.digest[:12],
        }


def _spread(xs: list[int]) -> dict[str, float]:
    if not xs:
        return {}
    a = np.asarray(xs, dtype=float)
    out = {"min": float(a.min())}
    out.update({f"p{q}": float(np.percentile(a, q)) for q in _PERCENTILES})
    out.update({"max": float(a.max()), "mean": round(float(a.mean()), 3)})
    return out


def traffic_kind(w: Workload) -> str:
    """``fixed`` (numbers only), ``distribution`` (a length law) or ``dataset:<format>``."""
    if w.dataset is not None:
        return f"dataset:{w.dataset.format}"
    laws = [w.input_tokens, w.output_tokens, w.sessions.turns if w.sessions else 1]
    return "fixed" if all(isinstance(v, int) for v in laws) else "distribution"


def _files(w: Workload) -> list[str]:
    names = [v.file for v in (w.input_tokens, w.output_tokens) if isinstance(v, Empirical)]
    if w.sessions is not None and isinstance(w.sessions.turns, Empirical):
        names.append(w.sessions.turns.file)
    if w.dataset is not None:
        names.append(w.dataset.path)
    return names


def check_traffic_files(w: Workload, base_dir: Path) -> None:
    """Read every file the workload names as its trials will (cached per file version), so a missing or
    malformed file, a chat ``messages`` entry without ``api: chat`` or a trace line without ``t`` is a one-line :class:`SpecError`
    before a study is opened or a server started; no tokenizer needed."""
    for v in (w.input_tokens, w.output_tokens, w.sessions.turns if w.sessions else None):
        if isinstance(v, Empirical):
            v.values(base_dir)
    if w.dataset is None:
        return
    ds = read_dataset(w.dataset, base_dir)
    chat = next((e for e in ds.entries if e.messages is not None), None)
    if chat is not None and w.api != "chat":
        raise SpecError(
            f"{ds.path}:{chat.line}", "", "messages need workload.api: chat (or give prompt text)"
        )
    if w.arrivals.kind == "trace":
        plan_traffic(w, 0, base_dir)  # a trace needs a t on every line


def traffic_digest(w: Workload, base_dir: Path) -> str:
    """sha256 (hex) of the traffic-defining keys (:data:`TRAFFIC_KEYS`) and the bytes of every file they
    name; no tokenizer needed. The files are checked first (:func:`check_traffic_files`): a missing or
    malformed one is a :class:`SpecError`, so no study is created or resumed on a file its trials refuse."""
    check_traffic_files(w, base_dir)
    h = hashlib.sha256()
    keys = w.model_dump(mode="json", by_alias=True, include=set(TRAFFIC_KEYS))
    h.update(json.dumps(keys, sort_keys=True, separators=(",", ":")).encode())
    for name in _files(w):
        path = resolve_file(name, base_dir)
        h.update(f"\0{name}\0".encode())
        with path.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def build_traffic(
    w: Workload, tokenizer: Tokenizer, count: int, *, api: str, max_model_len: int | None, base_dir: Path
) -> Traffic:
    """``count`` conversations for ``w`` (fewer by those dropped; see the module docstring). Deterministic
    in ``w.seed`` and the files' bytes. Raises :class:`SpecError` for a bad file and
    :class:`~tuner.errors.UsageError` for lengths the tokenizer cannot build (one line each)."""
    check_traffic_files(w, base_dir)
    plans = plan_traffic(w, count, base_dir)
    counted = _count_texts(plans, tokenizer, api, w)
    overhead = served_tokens(tokenizer, "", "chat") if api == "chat" else 0
    kept, dropped = _fit(counted, max_model_len, overhead)
    factory = PromptFactory(tokenizer, w.seed)
    try:
        first_lengths = [turns[0][1] for _, turns in kept if turns[0][0] is None]
        firsts = iter(factory.prompts(first_lengths, w.shared_prefix_tokens, api))
        later = iter(factory.contents([n for _, turns in kept for p, n, _t in turns[1:] if p is None]))
    except ValueError as e:
        raise UsageError(f"workload: {e}") from None
    convs = []
    for plan, turns in zip([p for p, _ in kept], [c for _, c in kept], strict=True):
        out = []
        for j, (prompt, n, t) in enumerate(turns):
            if prompt is None:
                prompt = next(firsts) if j == 0 else _message(next(later), n, api)
            out.append(Turn(prompt=prompt, output_tokens=t.output_tokens or 1, think_s=t.think_s))
        convs.append(Conversation(tuple(out), plan.at_s))
    return Traffic(
        conversations=tuple(convs),
        dropped=dropped,
        digest=traffic_digest(w, base_dir),
        kind=traffic_kind(w),
        arrivals=w.arrivals.kind if w.is_open_loop else "closed",
    )


_Counted = tuple[Prompt | None, int, TurnPlan]  # (prompt of a text turn, its token count, the plan)


def _count_texts(
    plans: list[ConversationPlan], tok: Tokenizer, api: str, w: Workload
) -> list[tuple[ConversationPlan, list[_Counted]]]:
    """Each turn with its token count: a dataset text becomes its prompt now; an output length taken from
    a reply becomes the reply's token count."""
    out = []
    for plan in plans:
        turns: list[_Counted] = []
        for j, t in enumerate(plan.turns):
            if t.output_tokens is None and t.reply is not None:
                t = replace(t, output_tokens=max(len(tok.encode(t.reply, add_special_tokens=False)), 1))
            if t.input_tokens is not None:
                turns.append((None, t.input_tokens, t))
            else:
                turns.append((*_text_prompt(t, j, tok, api, w), t))
        out.append((plan, turns))
    return out


def _text_prompt(t: TurnPlan, j: int, tok: Tokenizer, api: str, w: Workload) -> tuple[Prompt, int]:
    if j > 0:  # a later turn: its own message, counted without special tokens
        text = t.text or ""
        n = len(tok.encode(text, add_special_tokens=False))
        return _message(text, n, api), n
    if t.messages is not None:
        msgs = [{"role": r, "content": c} for r, c in t.messages]
        try:
            n = served_tokens(tok, msgs, api)
        except ValueError as e:
            raise SpecError(f"{w.dataset.path if w.dataset else 'dataset'}:{t.line}", "", str(e)) from None
        return Prompt(text=None, messages=msgs, n_tokens=n), n
    text = t.text or ""
    n = served_tokens(tok, text, api)
    if api == "chat":
        return Prompt(text=None, messages=[{"role": "user", "content": text}], n_tokens=n), n
    return Prompt(text=text, messages=None, n_tokens=n), n


def _message(text: str, n: int, api: str) -> Prompt:
    if api == "chat":
        return Prompt(text=None, messages=[{"role": "user", "content": text}], n_tokens=n)
    return Prompt(text=text, messages=None, n_tokens=n)


def _fit(
    counted: list[tuple[ConversationPlan, list[_Counted]]], limit: int | None, overhead: int
) -> tuple[list[tuple[ConversationPlan, list[_Counted]]], int]:
    """Cut each conversation at its first turn that does not fit ``limit``; count the turns cut."""
    if limit is None:
        return counted, 0
    kept = []
    dropped = 0
    for plan, turns in counted:
        history = 0
        n_fit = 0
        for j, (p, n, t) in enumerate(turns):
            size = (p.n_tokens if p is not None and j == 0 else n) + (overhead if j else 0)
            if history + size + (t.output_tokens or 1) > limit:
                break
            history += size + (t.output_tokens or 1)
            n_fit += 1
        dropped += len(turns) - n_fit
        if n_fit:
            kept.append((plan, turns[:n_fit]))
    return kept, dropped
