"""What one unit of traffic is: a conversation of one or more turns. Pure data, frozen.

Single-request traffic (fixed lengths, a length distribution, a dataset of prompts) is a sequence of
one-turn conversations; multi-turn sessions have several turns, each sent after the previous turn's reply
and its think time, carrying the earlier turns and replies. Built by :mod:`tuner.load.traffic`, sent by
:mod:`tuner.load.runner`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.load.prompts import Prompt


@dataclass(frozen=True)
class Turn:
    """One request of a conversation.

    ``prompt`` is this turn's new content (for the first turn, the whole prompt, a shared system message
    included); ``output_tokens`` is its ``max_tokens`` (sent with ``ignore_eos``); ``think_s`` is the pause
    between the previous turn's reply and this turn (0 for the first turn).
    """

    prompt: Prompt
    output_tokens: int
    think_s: float = 0.0


@dataclass(frozen=True)
class Conversation:
    """One or more turns sent in order; ``at_s`` is the send offset of its first turn when the traffic is
    a replayed trace (seconds from the start of the trace, before scaling), else ``None``."""

    turns: tuple[Turn, ...]
    at_s: float | None = None

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError("a conversation has at least one turn")
