"""What a conversation has said so far, and the request body of its next turn. Pure.

A later turn carries the history as a real client re-sends it, with the server's own replies (what its
prefix cache holds):

* chat: the messages so far — each earlier turn's messages (a text prompt as one ``user`` message) and
  its reply as an ``assistant`` message — then this turn's messages;
* completions: the concatenated text — each earlier turn's text and its reply — then this turn's text.

The first turn is sent exactly as given. ``n_tokens`` of a later turn's :class:`Prompt` is an estimate
(earlier prompts + replies' expected lengths + this turn): the server's ``usage.prompt_tokens`` is what
was sent.
"""

from __future__ import annotations

from typing import Literal

from tuner.load.prompts import Messages, Prompt


class History:
    """One conversation's history (see the module docstring): :meth:`prompt` for each turn in order, then
    :meth:`answered` with the reply once it has come back."""

    __slots__ = ("_answered", "_api", "_messages", "_text", "_tokens")

    def __init__(self, api: Literal["completions", "chat"]) -> None:
        self._api = api
        self._messages: Messages = []
        self._text: str | None = ""
        self._tokens = 0
        self._answered = False

    def prompt(self, turn: Prompt) -> Prompt:
        """What to send for ``turn`` (the first turn unchanged)."""
        if not self._answered:
            return turn
        n = self._tokens + turn.n_tokens
        if self._api == "chat":
            return Prompt(text=None, messages=[*self._messages, *_as_messages(turn)], n_tokens=n)
        if self._text is None or turn.text is None:  # the client reports a prompt without text
            return Prompt(text=None, messages=turn.messages, n_tokens=n)
        return Prompt(text=self._text + turn.text, messages=None, n_tokens=n)

    def answered(self, sent: Prompt, reply: str, reply_tokens: int) -> None:
        """Record that ``sent`` (what :meth:`prompt` returned) was answered with ``reply``."""
        self._answered = True
        self._tokens = sent.n_tokens + reply_tokens
        if self._api == "chat":
            self._messages = [*_as_messages(sent), {"role": "assistant", "content": reply}]
        else:
            self._text = None if sent.text is None else sent.text + reply


def _as_messages(p: Prompt) -> Messages:
    if p.messages is not None:
        return list(p.messages)
    return [{"role": "user", "content": p.text or ""}]
