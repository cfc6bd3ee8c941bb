"""tuner.load.session.History: what each later turn of a conversation sends."""

from __future__ import annotations

from tuner.load.prompts import Prompt
from tuner.load.session import History


def test_chat_history_carries_every_turn_and_reply() -> None:
    h = History("chat")
    sys_and_user = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}]
    first = Prompt(text=None, messages=sys_and_user, n_tokens=10)
    assert h.prompt(first) is first
    h.answered(first, "a1", 5)
    second = h.prompt(Prompt(text="q2", messages=None, n_tokens=3))  # a text turn is a user message
    assert second.messages == [
        *sys_and_user,
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert second.text is None and second.n_tokens == 18
    h.answered(second, "a2", 4)
    third = h.prompt(Prompt(text=None, messages=[{"role": "user", "content": "q3"}], n_tokens=3))
    assert third.messages is not None and [m["content"] for m in third.messages] == [
        "S",
        "q1",
        "a1",
        "q2",
        "a2",
        "q3",
    ]


def test_completions_history_is_the_concatenated_text() -> None:
    h = History("completions")
    first = Prompt(text="Q1.", messages=None, n_tokens=3)
    h.answered(h.prompt(first), " A1.", 2)
    second = h.prompt(Prompt(text=" Q2.", messages=None, n_tokens=2))
    assert (second.text, second.messages, second.n_tokens) == ("Q1. A1. Q2.", None, 7)


def test_completions_turn_without_text_is_left_for_the_client_to_refuse() -> None:
    h = History("completions")
    first = Prompt(text="Q1", messages=None, n_tokens=2)
    h.answered(first, "A", 1)
    assert h.prompt(Prompt(text=None, messages=[{"role": "user", "content": "q"}], n_tokens=2)).text is None
