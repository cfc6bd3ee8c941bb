"""The ``workload:`` section of a study file: what traffic each trial sends and how the load is stepped.

Pure schema (pydantic, frozen, unknown keys refused); :mod:`tuner.config.spec` embeds it in
:class:`~tuner.config.spec.StudySpec`. Errors surface through :func:`tuner.config.spec.spec_from_dict` as one
line naming the key path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapacitySpec(_Strict):
    """Capacity mode: step the load up inside one server start, score the best step that meets the SLO."""

    levels: list[float] | None = None  # concurrencies (or rates with request_rate); default: doubling
    start: float = Field(default=1, gt=0)
    factor: float = Field(default=2.0, gt=1)
    max_level: float = Field(default=256, gt=0)
    requests_per_step: int | None = Field(
        default=None, ge=1
    )  # default: max(4 x level, workload.requests / 4, the SLO percentile's need); whole waves at a concurrency
    stop_factor: float = Field(default=2.0, ge=1)  # stop once a latency reaches stop_factor x its SLO limit
    # refine the SLO boundary until (failing - passing) / passing <= resolution; null: the ladder alone
    resolution: float | None = Field(default=0.05, gt=0)
    max_steps: int = Field(default=16, ge=1)  # load steps per server start at most (ladder + refinement)
    prune: bool = True  # end a step once its SLO verdict is settled (tuner.measure.watch)


class Workload(_Strict):
    api: Literal["completions", "chat"] = "completions"
    input_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    shared_prefix_tokens: int = Field(default=0, ge=0)  # common system prompt (prefix caching)
    concurrency: int | None = Field(default=None, gt=0)
    request_rate: float | None = Field(default=None, gt=0)  # Poisson arrivals, req/s
    requests: int | None = Field(default=None, gt=0)
    duration_s: float | None = Field(default=None, gt=0)
    warmup_requests: int = Field(default=8, ge=0)
    mode: Literal["capacity", "fixed"] = "capacity"
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    max_failed_fraction: float = Field(default=0.05, ge=0, le=1)
    request_timeout_s: float = Field(default=600.0, gt=0)
    tokenizer: str | None = None  # default: the model
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.concurrency is not None and self.request_rate is not None:
            raise ValueError("give concurrency or request_rate, not both")
        if self.requests is None and self.duration_s is None:
            raise ValueError("give requests or duration_s")
        if self.requests is not None and self.duration_s is not None:
            raise ValueError("give requests or duration_s, not both")
        if self.shared_prefix_tokens >= self.input_tokens:
            raise ValueError("shared_prefix_tokens must be smaller than input_tokens")
        if self.mode == "fixed" and self.concurrency is None and self.request_rate is None:
            raise ValueError("fixed mode needs concurrency or request_rate")
        return self
