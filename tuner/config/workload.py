"""The ``workload:`` section of a study file: what traffic each trial sends and how the load is stepped.

Pure schema (pydantic, frozen, unknown keys refused); :mod:`tuner.config.spec` embeds it in
:class:`~tuner.config.spec.StudySpec`. Errors surface through :func:`tuner.config.spec.spec_from_dict` as one
line naming the key path (``workload.input_tokens.sigma: ...``).

Traffic keys (issue 12)::

    input_tokens: 512                                    # or a distribution:
    input_tokens: {dist: uniform, low: 128, high: 1024}
    input_tokens: {dist: normal, mean: 512, std: 128, min: 16, max: 2048}
    input_tokens: {dist: lognormal, median: 400, sigma: 0.8, min: 16, max: 4096}
    input_tokens: {dist: empirical, file: lengths.csv, column: input_tokens}
    dataset: {path: chat.json, format: sharegpt}        # jsonl | sharegpt | lengths (input_tokens omitted)
    sessions: {turns: {dist: uniform, low: 2, high: 6}, think_time_s: {dist: lognormal, median: 3, sigma: 1}}
    arrivals: {kind: gamma, burstiness: 0.5}             # poisson (default) | constant | gamma | trace

Integer lengths are drawn as floats, rounded, and clipped to ``[min, max]`` (``min`` defaults to 1; ``max``
is required for the unbounded laws so every request has a known bound). An ``empirical`` file holds one
integer per line, or a CSV with a header row whose ``column`` is used (the only column when there is one);
its values are drawn with replacement. Files are read by :mod:`tuner.load.datasets`, resolved beside the
study file, else in the working directory (``base_dir`` below is the study file's folder).

``arrivals.kind: trace`` replays the ``t`` column (seconds) of a ``lengths`` dataset: it takes neither
``concurrency`` nor ``request_rate``; ``scale`` speeds it up (2 = twice as fast). In capacity mode the
levels are scale factors; the default ladder is the usual one read as speed-ups: ``capacity.start`` (1, the
trace as recorded) times ``factor`` (2) up to ``max_level``; give ``capacity.levels`` (e.g. ``[0.25, 0.5,
1, 2]``) to try slower replays.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

#: draws used to compute the mean of a clipped, rounded normal or lognormal law (fixed seed: exact repeat)
_MEAN_DRAWS = 1 << 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _int_array(x: np.ndarray, low: float, high: float) -> np.ndarray:
    out: np.ndarray = np.clip(np.rint(x), low, high).astype(np.int64)
    return out


def _clipped_mean(draw: Any, low: float, high: float, integer: bool) -> float:
    x = draw(_MEAN_DRAWS, np.random.default_rng(0))
    return float(np.mean(_int_array(x, low, high) if integer else np.clip(x, low, high)))


class Uniform(_Strict):
    """Integers drawn uniformly from ``[low, high]`` (both included)."""

    dist: Literal["uniform"] = "uniform"
    low: int = Field(ge=1)
    high: int = Field(ge=1)

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def sample(self, n: int, rng: np.random.Generator, base_dir: Path | None = None) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)

    def mean(self, base_dir: Path | None = None) -> float:
        return (self.low + self.high) / 2

    def bounds(self, base_dir: Path | None = None) -> tuple[int, int]:
        """The smallest and largest value a draw can take."""
        return self.low, self.high


class _Clipped(_Strict):
    min: int = Field(default=1, ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _check_bounds(self) -> _Clipped:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator, base_dir: Path | None = None) -> np.ndarray:
        return _int_array(self._draw(n, rng), self.min, self.max)

    def mean(self, base_dir: Path | None = None) -> float:
        """The mean of the rounded, clipped law (by a fixed-seed set of draws)."""
        return _clipped_mean(self._draw, self.min, self.max, integer=True)

    def bounds(self, base_dir: Path | None = None) -> tuple[int, int]:
        return self.min, self.max


class Normal(_Clipped):
    """A normal law rounded to integers and clipped to ``[min, max]``."""

    model_config = ConfigDict(serialize_by_alias=True)  # the key is ``mean`` (``mean()`` is the method)

    dist: Literal["normal"] = "normal"
    mean_: float = Field(alias="mean", gt=0)
    std: float = Field(ge=0)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(self.mean_, self.std, size=n)


class LogNormal(_Clipped):
    """``median x exp(sigma x N(0, 1))``, rounded to integers and clipped to ``[min, max]``."""

    dist: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.lognormal(math.log(self.median), self.sigma, size=n)


class Empirical(_Strict):
    """Integers drawn with replacement from a file's values (see the module docstring)."""

    dist: Literal["empirical"] = "empirical"
    file: str = Field(min_length=1)
    column: str | None = None

    def values(self, base_dir: Path | None = None) -> np.ndarray:
        """The file's values (read once per file version by :mod:`tuner.load.datasets`)."""
        from tuner.load.datasets import read_int_column

        return read_int_column(self.file, self.column, base_dir)

    def sample(self, n: int, rng: np.random.Generator, base_dir: Path | None = None) -> np.ndarray:
        v = self.values(base_dir)
        return v[rng.integers(0, len(v), size=n)]

    def mean(self, base_dir: Path | None = None) -> float:
        return float(np.mean(self.values(base_dir)))

    def bounds(self, base_dir: Path | None = None) -> tuple[int, int]:
        v = self.values(base_dir)
        return int(v.min()), int(v.max())


class UniformTime(_Strict):
    """Seconds drawn uniformly from ``[low, high]``."""

    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> UniformTime:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=n)

    def mean(self) -> float:
        return (self.low + self.high) / 2


class _ClippedTime(_Strict):
    min: float = Field(default=0.0, ge=0)
    max: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> _ClippedTime:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.clip(self._draw(n, rng), self.min, self.max)

    def mean(self) -> float:
        return _clipped_mean(self._draw, self.min, self.max, integer=False)


class NormalTime(_ClippedTime):
    """Seconds from a normal law clipped to ``[min, max]`` (default ``[0, 3600]``)."""

    model_config = ConfigDict(serialize_by_alias=True)

    dist: Literal["normal"] = "normal"
    mean_: float = Field(alias="mean", ge=0)
    std: float = Field(ge=0)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(self.mean_, self.std, size=n)


class LogNormalTime(_ClippedTime):
    """Seconds ``median x exp(sigma x N(0, 1))`` clipped to ``[min, max]`` (default ``[0, 3600]``)."""

    dist: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.lognormal(math.log(self.median), self.sigma, size=n)


LengthDist = Uniform | Normal | LogNormal | Empirical
TimeDist = UniformTime | NormalTime | LogNormalTime
_LENGTH_DISTS: dict[str, type[BaseModel]] = {"uniform": Uniform, "normal": Normal, "lognormal": LogNormal,
                                             "empirical": Empirical}  # fmt: skip
_TIME_DISTS: dict[str, type[BaseModel]] = {
    "uniform": UniformTime,
    "normal": NormalTime,
    "lognormal": LogNormalTime,
}
_POSITIVE_INT: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(gt=0)])
_SECONDS: TypeAdapter[float] = TypeAdapter(Annotated[float, Field(ge=0, allow_inf_nan=False)])


def _dist_or(number: TypeAdapter[Any], dists: dict[str, type[BaseModel]]) -> Any:
    """A validator: a number (checked by ``number``) or a mapping with ``dist:`` naming one of ``dists``;
    errors inside a distribution keep their key path (``input_tokens.low``)."""

    def validate(v: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(v, BaseModel):
            return handler(v)
        if not isinstance(v, dict):
            return number.validate_python(v)
        cls = dists.get(v.get("dist"))  # type: ignore[arg-type]
        if cls is None:
            raise ValueError(f"a number, or a mapping with dist: one of {', '.join(dists)}")
        return cls.model_validate(v)

    return WrapValidator(validate)


#: ``input_tokens`` / ``output_tokens`` / ``sessions.turns``: a positive integer or a :data:`LengthDist`
Length = Annotated[int | LengthDist, _dist_or(_POSITIVE_INT, _LENGTH_DISTS)]
#: ``sessions.think_time_s``: seconds (>= 0) or a :data:`TimeDist`
Seconds = Annotated[float | TimeDist, _dist_or(_SECONDS, _TIME_DISTS)]


def length_mean(v: int | LengthDist, base_dir: Path | None = None) -> float:
    """The mean of a fixed length or a distribution of lengths."""
    return float(v) if isinstance(v, int) else v.mean(base_dir)


def length_bounds(v: int | LengthDist, base_dir: Path | None = None) -> tuple[int, int]:
    """The smallest and largest value of a fixed length or a distribution of lengths."""
    return (v, v) if isinstance(v, int) else v.bounds(base_dir)


class DatasetSpec(_Strict):
    """``dataset: {path, format}``: requests read from a file (see :mod:`tuner.load.datasets`)."""

    path: str = Field(min_length=1)
    format: Literal["jsonl", "sharegpt", "lengths"]


class Sessions(_Strict):
    """Multi-turn conversations: ``turns`` per conversation, ``think_time_s`` before each later turn."""

    turns: Length = 1
    think_time_s: Seconds = 0.0


class Arrivals(_Strict):
    """When requests are sent in the open loop (see the module docstring)."""

    kind: Literal["poisson", "constant", "gamma", "trace"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0)  # gamma only: 1 = Poisson, < 1 burstier
    scale: float = Field(default=1.0, gt=0)  # trace only: replay speed-up


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
    input_tokens: Length | None = None  # required unless a dataset gives the prompts
    output_tokens: Length | None = None  # required unless a dataset gives them; with one, overrides it
    shared_prefix_tokens: int = Field(default=0, ge=0)  # common system prompt (prefix caching)
    dataset: DatasetSpec | None = None
    sessions: Sessions | None = None
    arrivals: Arrivals = Field(default_factory=Arrivals)
    concurrency: int | None = Field(default=None, gt=0)
    request_rate: float | None = Field(default=None, gt=0)  # open loop, req/s (arrivals.kind)
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
        self._check_lengths()
        self._check_arrivals()
        if self.mode == "fixed" and not self.is_open_loop and self.concurrency is None:
            raise ValueError("fixed mode needs concurrency or request_rate")
        return self

    def _check_lengths(self) -> None:
        fmt = self.dataset.format if self.dataset is not None else None
        if fmt is None:
            for key in ("input_tokens", "output_tokens"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: required key is missing (or give a dataset)")
        elif self.input_tokens is not None:
            raise ValueError(
                "give input_tokens or a dataset, not both (output_tokens may override the dataset)"
            )
        if self.shared_prefix_tokens and fmt in ("jsonl", "sharegpt"):
            raise ValueError("shared_prefix_tokens needs synthetic prompts (not a jsonl or sharegpt dataset)")
        if self.shared_prefix_tokens and self.input_tokens is not None:
            low = self.input_tokens if isinstance(self.input_tokens, int) else None
            if isinstance(self.input_tokens, Uniform | Normal | LogNormal):
                low = self.input_tokens.bounds()[0]
            if low is not None and self.shared_prefix_tokens >= low:
                raise ValueError(
                    "shared_prefix_tokens must be smaller than input_tokens (its smallest value)"
                )

    def _check_arrivals(self) -> None:
        kind = self.arrivals.kind
        if kind in ("constant", "gamma") and self.request_rate is None:
            raise ValueError(f"arrivals.kind: {kind} needs request_rate")
        if self.arrivals.burstiness != 1.0 and kind != "gamma":
            raise ValueError("arrivals.burstiness is for kind: gamma only")
        if self.arrivals.scale != 1.0 and kind != "trace":
            raise ValueError("arrivals.scale is for kind: trace only")
        if kind == "trace":
            if self.dataset is None or self.dataset.format != "lengths":
                raise ValueError("arrivals.kind: trace needs a dataset of format: lengths with a t column")
            if self.concurrency is not None or self.request_rate is not None:
                raise ValueError("arrivals.kind: trace takes neither concurrency nor request_rate")
            if self.sessions is not None:
                raise ValueError("arrivals.kind: trace replays single requests; drop sessions")

    @property
    def is_open_loop(self) -> bool:
        """Whether requests are sent on a schedule (a rate or a trace) rather than by concurrency."""
        return self.request_rate is not None or self.arrivals.kind == "trace"

    def mean_input_tokens(self, base_dir: Path | None = None) -> float:
        """The mean prompt length of a request (a first turn). A dataset file is read (``base_dir``: the
        study file's folder; default the working directory); text prompts are estimated at 4 UTF-8 bytes a
        token (the traffic's summary has the exact figures)."""
        if self.input_tokens is not None:
            return length_mean(self.input_tokens, base_dir)
        assert self.dataset is not None  # (checked by the schema)
        from tuner.load.datasets import dataset_lengths

        return dataset_lengths(self.dataset, base_dir).mean_input

    def mean_output_tokens(self, base_dir: Path | None = None) -> float:
        """The mean ``max_tokens`` of a request; from a dataset file as :meth:`mean_input_tokens` says."""
        if self.output_tokens is not None:
            return length_mean(self.output_tokens, base_dir)
        assert self.dataset is not None
        from tuner.load.datasets import dataset_lengths

        return dataset_lengths(self.dataset, base_dir).mean_output

    def max_output_tokens(self, base_dir: Path | None = None) -> int:
        """An upper bound of any request's ``max_tokens`` (for the in-step watch, where a bound too high
        only makes pruning slower to fire): the fixed value, a law's ``max``/``high``, an empirical file's
        largest value; from a dataset, its largest output length, where a ShareGPT reply counts as many
        tokens as UTF-8 bytes (a token covers at least one byte)."""
        if self.output_tokens is not None:
            return length_bounds(self.output_tokens, base_dir)[1]
        assert self.dataset is not None
        from tuner.load.datasets import dataset_lengths

        return dataset_lengths(self.dataset, base_dir).max_output
