"""The study file: YAML in, a validated :class:`StudySpec` out. Pure: no server, no database.

Shape (every key but ``name``, ``model`` and ``workload`` has a default)::

    name: demo-cpu
    storage: sqlite:///studies/demo-cpu.db     # default: sqlite beside the study file, <name>.db
    model: ./models/tiny                        # local folder (relative to the study file) or hub name
    server:
      command: [python, -m, vllm.entrypoints.openai.api_server]
      args: {max-model-len: 2048}               # fixed flags for every trial
      env: {}
      host: 127.0.0.1
      startup_timeout_s: 600
    search:                                     # one entry per vLLM flag
      gpu-memory-utilization: {low: 0.1, high: 0.5}
      max-num-seqs: {low: 4, high: 256, log: true}
      block-size: {choices: [16, 32, 64]}
      quantization: {choices: [none, fp8, {name: awq, model: ./models/tiny-awq}]}
    workload: {input_tokens: 256, output_tokens: 64, concurrency: 32, requests: 200, warmup_requests: 8}
    slo: {ttft_p99_ms: 2000, itl_p99_ms: 100}
    objectives: [maximize output_throughput, minimize ttft_p99]
    sampler: tpe
    n_trials: 6

Errors are :class:`tuner.errors.SpecError`: one line naming the file, the key path and the reason. Where the
study's files are (model folders, storage, logs) is :mod:`tuner.config.paths`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from tuner.config.workload import Workload
from tuner.errors import SpecError
from tuner.search.samplers import SAMPLER_NAMES

#: the value of one vLLM flag: in ``server.args``, ``baseline``, a trial's params and ``--set``; ``None`` (or
#: the choice ``none``) means "leave vLLM's default"
FlagValue = bool | int | float | str | None

DEFAULT_COMMAND = ["python", "-m", "vllm.entrypoints.openai.api_server"]

#: metric names an objective or SLO may use, and whether larger is better
OBJECTIVE_METRICS: dict[str, str] = {
    "output_throughput": "maximize",
    "total_throughput": "maximize",
    "request_throughput": "maximize",
    "goodput": "maximize",
    "ttft_p50": "minimize",
    "ttft_p90": "minimize",
    "ttft_p99": "minimize",
    "itl_p50": "minimize",
    "itl_p90": "minimize",
    "itl_p99": "minimize",
    "tpot_p50": "minimize",
    "tpot_p90": "minimize",
    "tpot_p99": "minimize",
    "e2e_p50": "minimize",
    "e2e_p90": "minimize",
    "e2e_p99": "minimize",
}

#: vLLM flags whose value is a count or a size: must be > 0 (``low`` of a range, every numeric choice,
#: a fixed value); and flags that may be 0 but never negative
POSITIVE_FLAGS = frozenset(
    {
        "max-num-seqs", "max-num-batched-tokens", "max-model-len", "block-size", "tensor-parallel-size",
        "pipeline-parallel-size", "data-parallel-size", "max-num-partial-prefills",
        "max-long-partial-prefills", "max-seq-len-to-capture", "num-scheduler-steps", "max-logprobs",
    }
)  # fmt: skip
NON_NEGATIVE_FLAGS = frozenset({"swap-space", "cpu-offload-gb", "long-prefill-token-threshold"})
#: fractions: must lie in (0, 1]
FRACTION_FLAGS = frozenset({"gpu-memory-utilization"})
_FLAG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
#: flags tuner passes itself (the served model and where the server listens)
TUNER_FLAGS = frozenset({"model", "host", "port"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(_Strict):
    """A float flag searched in ``[low, high]``; ``log`` samples on a log scale; ``step`` quantises."""

    kind: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        _check_range(self.low, self.high, self.log, self.step)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be used together")
        return self


class IntRange(_Strict):
    """An integer flag searched in ``[low, high]``."""

    kind: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        _check_range(self.low, self.high, self.log, self.step)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be used together")
        return self


class Checkpoint(_Strict):
    """A choice that also swaps the served weights, e.g. a pre-quantized AWQ or GPTQ checkpoint."""

    name: str
    model: str


Choice = bool | int | float | str | None | Checkpoint


class Choices(_Strict):
    """A flag searched over a list. ``none``/``null`` means "do not pass the flag" (vLLM's default)."""

    kind: Literal["choice"] = "choice"
    choices: list[Choice] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: list[Choice]) -> list[Choice]:
        labels = [choice_label(c) for c in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"choices must be distinct, got {labels}")
        return v

    def labels(self) -> list[str | int | float | bool]:
        """Optuna-safe labels (primitives), in file order."""
        return [choice_label(c) for c in self.choices]

    def value_of(self, label: object) -> Choice:
        for c in self.choices:
            if choice_label(c) == label:
                return c
        raise KeyError(label)


def choice_label(c: Choice) -> str | int | float | bool:
    """The primitive Optuna stores for a choice: ``None`` becomes ``"none"``, a checkpoint its name."""
    if c is None:
        return "none"
    if isinstance(c, Checkpoint):
        return c.name
    return c


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite numbers")
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ValueError("a log range needs low > 0")
    if step is not None and step <= 0:
        raise ValueError("step must be positive")


SearchEntry = Annotated[FloatRange | IntRange | Choices, Field(discriminator="kind")]


class ServerSpec(_Strict):
    command: list[str] = Field(default_factory=lambda: list(DEFAULT_COMMAND), min_length=1)
    args: dict[str, FlagValue] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    startup_timeout_s: float = Field(default=600.0, gt=0)
    stop_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("args")
    @classmethod
    def _flag_names(cls, v: dict[str, FlagValue]) -> dict[str, FlagValue]:
        for k in v:
            _check_flag_name(k)
        return v


class Slo(_Strict):
    """Latency limits in milliseconds. A trial is feasible when every given limit holds."""

    ttft_p99_ms: float | None = Field(default=None, gt=0)
    itl_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)
    e2e_p99_ms: float | None = Field(default=None, gt=0)
    ttft_p90_ms: float | None = Field(default=None, gt=0)
    itl_p90_ms: float | None = Field(default=None, gt=0)

    def limits(self) -> dict[str, float]:
        """``{"ttft_p99": 2000.0, ...}`` for the limits that are set (metric name without ``_ms``)."""
        return {k.removesuffix("_ms"): v for k, v in self.model_dump().items() if v is not None}


class Objective(_Strict):
    direction: Literal["maximize", "minimize"]
    metric: str


class Confirm(_Strict):
    """``confirm: {top: 3, repeats: 2}``: re-measure the leading configurations (:mod:`tuner.search.confirm`)."""

    top: int = Field(default=3, ge=1)  # the best feasible configurations by the first objective
    repeats: int = Field(default=2, ge=1)  # fresh server starts each, beside its first measurement


class Prior(_Strict):
    """``prior: {sim: true, trials: 300, top: 5}``: the simulator's view of the study
    (:mod:`tuner.search.prior`). ``sim``: warm start (queue the ``top`` distinct best of ``trials`` simulated
    trials after the baseline); ``predict``: store the simulator's prediction with every trial; ``refit``
    (with ``predict``): refit the simulator's efficiency constants to the study's measured trials as they
    arrive and predict later trials with them; ``hardware``: the simulator's profile (default: the GPU NVML
    names, the server's ``--sim-hardware``, else the CPU)."""

    sim: bool = False
    trials: int = Field(default=300, ge=1)
    top: int = Field(default=5, ge=1)
    predict: bool = True
    refit: bool = True
    hardware: str | None = None


#: ``resources.gpu_wait_s`` when not given: how long a trial waits for its GPUs' memory before it is given back
DEFAULT_GPU_WAIT_S = 300.0


@with_config(ConfigDict(extra="forbid"))
class Resources(TypedDict, total=False):
    """``resources: {gpus: all}`` or ``{gpus: [0, 1, 2, 3]}``: parallel trials on these GPUs (``tuner run
    --gpus``); ``gpu_wait_s``: how long a trial waits, before its server starts, for another process to free
    its GPUs' memory (default :data:`DEFAULT_GPU_WAIT_S`; :mod:`tuner.measure.gpufree`)."""

    gpus: str | list[int | str]
    gpu_wait_s: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class StudySpec(_Strict):
    name: str = Field(min_length=1)
    storage: str | None = None
    model: str = Field(min_length=1)
    served_model_name: str | None = None
    server: ServerSpec = Field(default_factory=ServerSpec)
    search: dict[str, SearchEntry] = Field(default_factory=dict)
    workload: Workload
    slo: Slo = Field(default_factory=Slo)
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(direction="maximize", metric="output_throughput"),
            Objective(direction="minimize", metric="ttft_p99"),
        ],
        min_length=1,
        max_length=3,
    )
    sampler: str = "tpe"  # one of tuner.search.samplers.SAMPLER_NAMES
    n_trials: int = Field(default=20, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    #: trial 0: ``true`` = vLLM's defaults for every searched flag; a mapping = defaults except these flags
    #: (e.g. ``{gpu-memory-utilization: 0.3}`` on the CPU build, whose default 0.92 cannot start); ``false`` = none
    baseline: bool | dict[str, FlagValue] = True
    seed: int | None = 0
    #: TPE and vLLM's compile cache (:mod:`tuner.search.restart_cost`): ``off`` (default): plain TPE, which already
    #: repeats keys of choice lists often; ``rank`` TPE's candidates by expected improvement per second (a
    #: start with a compiled key is cheaper); ``variants``: also offer each candidate with a compiled key's
    #: values (more trials per hour, worse configurations found: docs/restart_cost.md). Only TPE uses it
    compile_key_reuse: Literal["off", "rank", "variants"] = "off"
    confirm: Confirm | None = (
        None  # re-measure the leaders once ``tuner run`` reaches the budget; default off
    )
    prior: Prior | None = None  # the simulator's warm start and predictions (Prior); default off
    resources: Resources | None = None  # GPUs for parallel trials, how long a trial waits for GPU memory
    results_dir: str | None = None  # per-trial logs; default: <study file dir>/<name>.runs
    source: str | None = None  # the file this came from (set by the loader)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("name may use letters, digits, '.', '_' and '-'")
        return v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        if v not in SAMPLER_NAMES:
            quoted = [repr(n) for n in SAMPLER_NAMES]
            raise ValueError(f"Input should be {', '.join(quoted[:-1])} or {quoted[-1]}")
        return v

    @field_validator("search")
    @classmethod
    def _search_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            _check_flag_name(k)
        return v

    @field_validator("objectives", mode="before")
    @classmethod
    def _parse_objectives(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [parse_objective(o) if isinstance(o, str) else o for o in v]

    @model_validator(mode="after")
    def _cross(self) -> StudySpec:
        both = set(self.search) & set(self.server.args)
        if both:
            raise ValueError(f"search: flags both fixed in server.args and searched: {sorted(both)}")
        for o in self.objectives:
            if o.metric not in OBJECTIVE_METRICS:
                raise ValueError(
                    f"objectives: unknown objective metric {o.metric!r}; known: {', '.join(OBJECTIVE_METRICS)}"
                )
            if OBJECTIVE_METRICS[o.metric] != o.direction:
                raise ValueError(f"objectives: {o.metric} can only be {OBJECTIVE_METRICS[o.metric]}d")
        if len({o.metric for o in self.objectives}) != len(self.objectives):
            raise ValueError("objectives: must be distinct")
        for k, entry in self.search.items():
            checkpoint = isinstance(entry, Choices) and any(isinstance(c, Checkpoint) for c in entry.choices)
            if checkpoint and k != "quantization":
                raise ValueError(f"search.{k}: only quantization choices may name a checkpoint")
        for k, entry in self.search.items():
            if isinstance(entry, FloatRange | IntRange):
                _check_flag_value(f"search.{k}", k, entry.low, "low")
                _check_flag_value(f"search.{k}", k, entry.high, "high")
            else:
                for c in entry.choices:
                    _check_flag_value(f"search.{k}", k, c, "choice")
        if isinstance(self.baseline, dict):
            for k, v in self.baseline.items():
                _check_flag_name(k)
                if k in self.server.args:
                    raise ValueError(f"baseline.{k}: already fixed in server.args")
                _check_flag_value(f"baseline.{k}", k, v, "value")
        for k, v in self.server.args.items():
            _check_flag_value(f"server.args.{k}", k, v, "value")
        return self

    @property
    def direction_names(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [o.metric for o in self.objectives]


def parse_objective(text: str) -> dict[str, str]:
    """``"maximize output_throughput"`` -> ``{"direction": "maximize", "metric": "output_throughput"}``."""
    parts = text.split()
    if len(parts) != 2 or parts[0] not in ("maximize", "minimize"):
        raise ValueError(f"objective {text!r} must read 'maximize METRIC' or 'minimize METRIC'")
    return {"direction": parts[0], "metric": parts[1]}


def is_settable_flag(name: str) -> bool:
    """Whether ``name`` (without dashes) may be given a value by a study or ``--set``: a lower-case vLLM flag
    name that is not one of :data:`TUNER_FLAGS`."""
    return bool(_FLAG_RE.match(name)) and name not in TUNER_FLAGS


def _check_flag_name(name: str) -> None:
    if name.startswith("-"):
        raise ValueError(f"flag {name!r}: write it without leading dashes")
    if not _FLAG_RE.match(name):
        raise ValueError(f"flag {name!r}: vLLM flags are lower-case words joined by '-'")
    if name in TUNER_FLAGS:
        raise ValueError(f"flag {name!r} is set by tuner itself")


def _check_flag_value(where: str, name: str, value: object, what: str) -> None:
    """Refuse a number no vLLM accepts for ``name`` (a negative count, a memory fraction above 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if name in FRACTION_FLAGS and not 0 < value <= 1:
        raise ValueError(f"{where}: must lie in (0, 1], got {what} {value}")
    if name in POSITIVE_FLAGS and value <= 0:
        raise ValueError(f"{where}: must be positive, got {what} {value}")
    if name in NON_NEGATIVE_FLAGS and value < 0:
        raise ValueError(f"{where}: must not be negative, got {what} {value}")


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "int", "choice") or part.startswith("function-") or "[" in part:
            continue  # pydantic's union branch names are noise for a person
        else:
            part = part if re.fullmatch(r"[\w.-]+", part) else json.dumps(part)
            out += f".{part}" if out else str(part)
    return out


def spec_from_dict(data: Any, source: str = "<study>") -> StudySpec:
    """Validate a parsed study file. ``source`` names it in errors."""
    if data is None:
        raise SpecError(source, "", "the study file is empty")
    if not isinstance(data, dict):
        raise SpecError(source, "", f"expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    search = data.get("search")
    if isinstance(search, dict):
        data["search"] = {k: _tag_entry(v) for k, v in search.items()}
    data["source"] = source
    try:
        return StudySpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = _key_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        raise SpecError(source, key, " ".join(msg.split())) from None


def _tag_entry(v: Any) -> Any:
    """Give each search entry its ``kind`` so pydantic names one branch in its errors."""
    if not isinstance(v, dict) or "kind" in v:
        return v
    if "choices" in v:
        return {"kind": "choice", **v}
    values = [v.get("low"), v.get("high"), v.get("step")]
    nums = [x for x in values if x is not None]
    if nums and all(isinstance(x, int) and not isinstance(x, bool) for x in nums):
        return {"kind": "int", **v}
    return {"kind": "float", **v}


def load_spec(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a study file. Raises :class:`SpecError` with a one-line reason."""
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(name, "", "no such file") from None
    except IsADirectoryError:
        raise SpecError(name, "", "is a directory, not a study file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(name, "", f"cannot read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(name, where, f"malformed YAML: {problem}") from None
    return spec_from_dict(data, source=name)
