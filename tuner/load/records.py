"""Raw per-request timestamps. Everything here is recorded; nothing is derived."""

from __future__ import annotations

from dataclasses import dataclass, field

#: ``error`` of a request cut short on purpose (a settled step, Ctrl-C): neither completed nor failed
CANCELLED = "cancelled"


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are seconds on the runner's monotonic clock.

    A failed request is a record with ``error`` set (HTTP status, connection error, timeout, a stream
    that ended early), never an exception.
    """

    send_time: float
    first_token_time: float | None = None
    #: arrival time of every streamed chunk that carried output tokens (the first one included)
    token_times: list[float] = field(default_factory=list)
    #: how many output tokens each chunk carried, parallel to ``token_times`` (vLLM may batch several)
    chunk_tokens: list[int] = field(default_factory=list)
    end_time: float | None = None
    prompt_tokens: int | None = None  # from the server's usage, when it sent one
    output_tokens: int | None = None  # from the server's usage; else the number of streamed tokens
    expected_output_tokens: int | None = None
    error: str | None = None
    warmup: bool = False
    #: which conversation of the run (0, 1, ... in the order they started) and which of its turns (0 first)
    conversation: int = 0
    turn: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_time is not None
