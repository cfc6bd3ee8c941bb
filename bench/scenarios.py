"""Scenarios of the search-efficiency benchmark: a model on a GPU, a load, an SLO and a search space.

Each search entry is what a study file would declare (an Optuna distribution) plus the *fine grid* the
objective is evaluated on: a sampled value is snapped to the nearest grid value (in log space for log
ranges), so the objective every sampler sees is the simulator's answer at that grid point, and the grid's
best feasible point is the exact optimum of that objective.

Objective of a configuration: tuner's own capacity rule (:mod:`tuner.measure.capacity`, through
:func:`tuner.sim.engine.capacity`) with the scenario's ``capacity``, each step simulated: a study file's
default ladder (concurrency 1, 2, 4 ... 256; stop once a latency reaches twice its limit, or throughput
saturates with the SLO broken), then bisection of the SLO boundary to 5 % (at most 16 steps), with an
explicit ``requests_per_step`` (:data:`BENCH_CAPACITY`: the workload's 128 requests a step, where the default
would size every step for a p99 interval, 299 requests, and double the benchmark's run time; the H200
scenario: its study's 256). The score is the output throughput of the best step meeting the SLO.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.config.workload import CapacitySpec
from tuner.sim.engine import SimWorkload

Value = bool | int | float | str


@dataclass(frozen=True)
class Param:
    """One searched flag: the distribution samplers draw from, and the fine grid it is evaluated on."""

    name: str
    distribution: BaseDistribution
    grid: tuple[Value, ...]

    @property
    def log(self) -> bool:
        return bool(getattr(self.distribution, "log", False))

    def snap(self, value: Any) -> Value:
        """The grid value nearest to ``value`` (log distance for log ranges; categorical: itself)."""
        if isinstance(self.distribution, CategoricalDistribution):
            return value  # type: ignore[no-any-return]
        v = float(value)
        if self.log:
            return min(self.grid, key=lambda g: abs(math.log(float(g)) - math.log(v)))
        return min(self.grid, key=lambda g: abs(float(g) - v))

    def cell_measures(self) -> list[float]:
        """The probability that a uniform draw from the distribution snaps to each grid value."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return [1.0 / len(self.grid)] * len(self.grid)
        lo, hi = float(getattr(d, "low", 0.0)), float(getattr(d, "high", 1.0))
        step = getattr(d, "step", None)
        if isinstance(d, IntDistribution) or step is not None:  # a stepped range: each step a whole cell
            half = 0.5 * float(step or 1)
            lo, hi = lo - half, hi + half
        f = math.log if self.log else (lambda x: x)
        pts = [f(float(g)) for g in self.grid]
        edges = [f(lo)] + [(a + b) / 2 for a, b in itertools.pairwise(pts)] + [f(hi)]
        total = f(hi) - f(lo)
        return [max(b - a, 0.0) / total for a, b in itertools.pairwise(edges)]


def _geometric(low: int, high: int, ratio: float = math.sqrt(2)) -> tuple[int, ...]:
    vals = []
    v = float(low)
    while v <= high * 1.0001:
        vals.append(round(v))
        v *= ratio
    return tuple(sorted(set(vals)))


MNS = Param("max-num-seqs", IntDistribution(8, 512, log=True), _geometric(8, 512))
MNBT = Param("max-num-batched-tokens", IntDistribution(128, 16384, log=True), _geometric(128, 16384))
GMU = Param("gpu-memory-utilization", FloatDistribution(0.80, 0.95), (0.80, 0.85, 0.90, 0.95))
PREFIX = Param("enable-prefix-caching", CategoricalDistribution([True, False]), (True, False))
CHUNKED = Param("enable-chunked-prefill", CategoricalDistribution([True, False]), (True, False))
KV_DTYPE = Param("kv-cache-dtype", CategoricalDistribution(["auto", "fp8"]), ("auto", "fp8"))

#: the H200 study's space (studies/h200-llama8b-reuse.yaml), its choice lists as the study gives them
H200_GMU = Param(
    "gpu-memory-utilization",
    FloatDistribution(0.20, 0.95, step=0.05),
    tuple(round(0.20 + 0.05 * i, 2) for i in range(16)),
)
H200_MNS = Param("max-num-seqs", CategoricalDistribution([64, 128, 256, 1024]), (64, 128, 256, 1024))
H200_MNBT = Param(
    "max-num-batched-tokens", CategoricalDistribution([2048, 4096, 8192, 16384]), (2048, 4096, 8192, 16384)
)
BLOCK = Param("block-size", CategoricalDistribution([16, 32]), (16, 32))
QUANT = Param("quantization", CategoricalDistribution(["none", "fp8"]), ("none", "fp8"))

#: the capacity rule's defaults with the workload's 128 requests a step (see the module docstring)
BENCH_CAPACITY = CapacitySpec(requests_per_step=128)

#: max-num-seqs x max-num-batched-tokens lists of vLLM's benchmarks/auto_tune/auto_tune.sh (its defaults)
AUTOTUNE_NUM_SEQS = (128, 256)
AUTOTUNE_BATCHED_TOKENS = (512, 1024, 2048, 4096)
#: a wider grid of the same script, as a user would fill the lists in for a 30-trial budget
AUTOTUNE_WIDE_NUM_SEQS = (16, 32, 64, 128, 256, 512)
AUTOTUNE_WIDE_BATCHED_TOKENS = (1024, 2048, 4096, 8192, 16384)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    model: str
    hardware: str
    workload: SimWorkload
    slo: dict[str, float]
    params: tuple[Param, ...]
    fixed: dict[str, Value] = field(default_factory=dict)
    capacity: CapacitySpec = field(
        default_factory=lambda: BENCH_CAPACITY
    )  # the study's ``workload.capacity``

    @property
    def space(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution for p in self.params}

    def points(self) -> Iterator[tuple[Value, ...]]:
        """Every fine-grid point, in ``params`` order."""
        return itertools.product(*(p.grid for p in self.params))

    def n_points(self) -> int:
        return math.prod(len(p.grid) for p in self.params)

    def snap(self, values: dict[str, Any]) -> tuple[Value, ...]:
        return tuple(p.snap(values[p.name]) for p in self.params)

    def flags(self, point: Sequence[Value]) -> dict[str, Value]:
        return {**self.fixed, **{p.name: v for p, v in zip(self.params, point, strict=True)}}

    def point_measure(self, point: Sequence[Value]) -> float:
        """Probability that random search draws (a value snapping to) ``point``."""
        m = 1.0
        for p, v in zip(self.params, point, strict=True):
            m *= p.cell_measures()[p.grid.index(v)]
        return m

    def autotune(self, wide: bool = False) -> list[tuple[Value, ...]]:
        """vLLM's auto_tune.sh grid in its loop order (num_seqs outer, batched tokens inner): the largest
        gpu-memory-utilization that starts (it probes 0.98 down to 0.90; here the grid's largest),
        ``--enable-prefix-caching``, everything else at vLLM's defaults."""
        seqs = AUTOTUNE_WIDE_NUM_SEQS if wide else AUTOTUNE_NUM_SEQS
        toks = AUTOTUNE_WIDE_BATCHED_TOKENS if wide else AUTOTUNE_BATCHED_TOKENS
        defaults: dict[str, Value] = {
            "gpu-memory-utilization": max(float(g) for g in GMU.grid),
            "enable-prefix-caching": True,
            "enable-chunked-prefill": True,
            "kv-cache-dtype": "auto",
            "block-size": 16,
            "quantization": "none",
        }
        out = []
        for s in seqs:
            for t in toks:
                values = {**defaults, "max-num-seqs": s, "max-num-batched-tokens": t}
                out.append(self.snap(values))
        return out


LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
QWEN_7B_AWQ = "Qwen/Qwen2.5-7B-Instruct-AWQ"
BASE = (GMU, MNS, MNBT, PREFIX, CHUNKED)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="chat-h100",
        title="chat, short prompts (512 in / 256 out), Llama-3.1-8B bf16 on H100",
        model=LLAMA_8B,
        hardware="H100",
        workload=SimWorkload(input_tokens=512, output_tokens=256, requests=128),
        slo={"ttft_p99": 1000.0, "itl_p99": 50.0},
        params=BASE,
        fixed={"max-model-len": 8192},
    ),
    Scenario(
        name="rag-h100",
        title="long-prompt RAG (6000 in / 300 out), Llama-3.1-8B bf16 on H100",
        model=LLAMA_8B,
        hardware="H100",
        workload=SimWorkload(input_tokens=6000, output_tokens=300, requests=128),
        slo={"ttft_p99": 6000.0, "itl_p99": 100.0},
        params=(*BASE, KV_DTYPE),
        fixed={"max-model-len": 8192},
    ),
    Scenario(
        name="prefix-h100",
        title="shared system prompt (1792 of 2048 in shared / 200 out), Llama-3.1-8B on H100",
        model=LLAMA_8B,
        hardware="H100",
        workload=SimWorkload(input_tokens=2048, output_tokens=200, shared_prefix_tokens=1792, requests=128),
        slo={"ttft_p99": 800.0, "itl_p99": 50.0},
        params=BASE,
        fixed={"max-model-len": 8192},
    ),
    Scenario(
        name="tight-itl-h100",
        title="tight ITL SLO (p99 <= 15 ms; 1024 in / 256 out), Llama-3.1-8B on H100",
        model=LLAMA_8B,
        hardware="H100",
        workload=SimWorkload(input_tokens=1024, output_tokens=256, requests=128),
        slo={"ttft_p99": 2000.0, "itl_p99": 15.0},
        params=BASE,
        fixed={"max-model-len": 8192},
    ),
    Scenario(
        name="chat-l4-awq",
        title="chat (1024 in / 512 out), Qwen2.5-7B AWQ on L4 24 GB",
        model=QWEN_7B_AWQ,
        hardware="L4",
        workload=SimWorkload(input_tokens=1024, output_tokens=512, requests=128),
        slo={"ttft_p99": 3000.0, "itl_p99": 100.0},
        params=(*BASE, KV_DTYPE),
        fixed={"max-model-len": 8192},
    ),
    Scenario(
        name="tight-itl-l4-awq",
        title="tight ITL SLO (p99 <= 40 ms; 512 in / 256 out), Qwen2.5-7B AWQ on L4 24 GB",
        model=QWEN_7B_AWQ,
        hardware="L4",
        workload=SimWorkload(input_tokens=512, output_tokens=256, requests=128),
        slo={"ttft_p99": 3000.0, "itl_p99": 40.0},
        params=BASE,
        fixed={"max-model-len": 8192},
    ),
    Scenario(
        name="h200-llama8b",
        title="the H200 study (1024 in / 256 out), Llama-3.1-8B on H200, its five flags",
        model=LLAMA_8B,
        hardware="H200",
        workload=SimWorkload(input_tokens=1024, output_tokens=256, requests=256),
        slo={"ttft_p99": 1000.0, "itl_p99": 50.0},
        params=(H200_GMU, H200_MNS, H200_MNBT, BLOCK, QUANT),
        capacity=CapacitySpec(requests_per_step=256),  # max-model-len: the model's 131072, as in the study
    ),
)
