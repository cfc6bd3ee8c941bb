"""A discrete-event model of vLLM's V1 engine: scheduler, paged KV cache, prefix cache, step time.

Three layers, each usable alone:

* :class:`SimConfig` -> :func:`plan_engine` -> :class:`Plan`: vLLM's flags resolved the way vLLM resolves
  them (platform defaults, validation, memory profiling). A rejected combination raises
  :class:`StartupError` whose ``failure`` is ``invalid_config`` or ``oom`` and whose ``lines`` are the log
  lines vLLM prints for it (the texts tuner's failure classifier reads).
* :class:`Engine`: continuous batching one step at a time, faithful to vLLM's scheduler — running
  requests first in admission order (each gets ``min(remaining, budget)`` tokens; chunked prefill), then
  waiting requests FCFS while ``max-num-seqs`` and the token budget allow; a new request needs its KV blocks
  up front; when a running request cannot get a block the *last* running request is preempted
  (recompute: blocks freed, back to the front of the queue); no admissions in a step that preempted. KV
  blocks are ``block-size`` tokens (a partly filled last block is held whole). Prefix caching keeps full
  blocks under a chained hash, shares them across requests (reference counts) and evicts free ones LRU.
  Steps in which nothing but decodes can happen are advanced in bulk (exactly the same arithmetic, fewer
  Python iterations), which keeps a 1,000-request run in tens of milliseconds.
* :func:`simulate` (a whole load run in-process, no HTTP, returning a :class:`tuner.measure.metrics.Summary`) and
  :func:`capacity` (tuner's own capacity rule, :mod:`tuner.measure.capacity`, each level simulated).

Step time (per device; tensor parallel splits weights, KV and FLOPs and adds two all-reduces per layer)::

    tc = lin_flops / (peak_q * gemm) + head_flops / (peak * gemm) + attn_flops / (peak * attention)
    tm = (weight_bytes + kv_bytes) / (bandwidth * memory)
    step = (tc**p + tm**p) ** (1/p) + allreduce + step_s + per_seq_s * seqs + per_token_s * tokens

with the efficiency constants of :mod:`tuner.sim.hardware`. Times are simulated seconds.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tuner.config.workload import CapacitySpec, Workload
from tuner.load.records import RequestRecord
from tuner.measure.capacity import run_ladder
from tuner.measure.memory import (
    DTYPE_BYTES,
    FP8_BYTES,
    int_quant_bytes,
    kv_element_bytes,
    weights_per_gpu,
)
from tuner.measure.metrics import Distribution, Summary
from tuner.measure.quantile import settled_broken
from tuner.measure.slo import request_latency, within
from tuner.sim.hardware import GiB, Hardware, get_hardware
from tuner.sim.model_shape import ModelShape, load_shape

QUANT_METHODS = ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8")
KV_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
DEFAULT_MAX_FAILED_FRACTION: float = Workload.model_fields["max_failed_fraction"].default


class StartupError(Exception):
    """vLLM would refuse to start. ``failure``: ``invalid_config`` or ``oom``; ``lines``: its log lines."""

    def __init__(self, failure: str, lines: Sequence[str]) -> None:
        self.failure = failure
        self.lines = list(lines)
        super().__init__(self.lines[-1] if self.lines else failure)


@dataclass(frozen=True)
class SimConfig:
    """The flags of one server, by vLLM's names (``None``: vLLM's default for this hardware)."""

    model: str
    hardware: str = "H200"
    gpu_memory_utilization: float = 0.92
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    max_model_len: int | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    quantization: str | None = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    served_model_name: str | None = None
    shape: ModelShape | None = None  # given: used instead of reading ``model``
    hw: Hardware | None = None  # given: used instead of looking ``hardware`` up


@dataclass(frozen=True)
class Plan:
    """A configuration as vLLM would run it: resolved flags, memory split and step-time coefficients."""

    config: SimConfig
    shape: ModelShape
    hardware: Hardware
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    max_model_len: int
    chunked_prefill: bool
    prefix_caching: bool
    tp: int
    quant: str  # none | fp8 | awq | gptq
    dtype: str  # bfloat16 | float16 | float32
    kv_dtype_bytes: int
    weight_bytes: float  # per device
    activation_bytes: float  # per device, profiling peak
    kv_cache_bytes: float  # per device, before rounding to blocks
    num_blocks: int
    kv_bytes_per_token: float  # per device
    # step-time coefficients (seconds)
    c_lin: float  # per scheduled token (linear layers)
    c_head: float  # per scheduled sequence (logits)
    c_attn: float  # per query-key pair
    m_fixed: float  # weights streamed once per step
    m_kv: float  # per KV token read or written
    comm_fixed: float
    comm_token: float
    step_s: float
    per_seq_s: float
    per_token_s: float
    overlap_p: float
    ingest_s: float
    mixed_step_s: float

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def step_time(self, tokens: float, seqs: float, attn_pairs: float, kv_tokens: float) -> float:
        """Seconds for one engine step scheduling ``tokens`` tokens over ``seqs`` sequences, with
        ``attn_pairs`` query-key pairs of attention and ``kv_tokens`` tokens of KV cache read or written
        (the mixed-step overhead is added by the caller)."""
        arr = self.step_times(tokens, seqs, np.array([attn_pairs]), np.array([kv_tokens]))
        return float(arr[0])

    def step_times(
        self, tokens: float, seqs: float, attn_pairs: np.ndarray, kv_tokens: np.ndarray
    ) -> np.ndarray:
        """:meth:`step_time` for steps of equal token and sequence counts (vectorised over the rest)."""
        tc = (self.c_lin * tokens + self.c_head * seqs) + self.c_attn * attn_pairs
        tm = self.m_fixed + self.m_kv * kv_tokens
        p = self.overlap_p
        if p >= 50:
            gpu = np.maximum(tc, tm)
        elif p == 1.0:
            gpu = tc + tm
        else:
            hi = np.maximum(np.maximum(tc, tm), 1e-30)
            gpu = hi * ((tc / hi) ** p + (tm / hi) ** p) ** (1.0 / p)
        host = (
            self.comm_fixed
            + self.comm_token * tokens
            + self.step_s
            + self.per_seq_s * seqs
            + self.per_token_s * tokens
        )
        out: np.ndarray = gpu + host
        return out

    def decode_step_times(self, batch: int, kv0: float, n: int) -> np.ndarray:
        """Durations of ``n`` consecutive decode-only steps of ``batch`` sequences whose summed context
        (KV tokens read and written) is ``kv0`` in the first step and grows by ``batch`` per step."""
        kv = kv0 + batch * np.arange(n, dtype=float)
        return self.step_times(float(batch), float(batch), kv, kv)

    def describe(self) -> dict[str, Any]:
        """The resolved flags and memory split (for logs and the calibration table)."""
        return {
            "hardware": self.hardware.name,
            "model": self.shape.name,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "block_size": self.block_size,
            "max_model_len": self.max_model_len,
            "enable_chunked_prefill": self.chunked_prefill,
            "enable_prefix_caching": self.prefix_caching,
            "tensor_parallel_size": self.tp,
            "quantization": self.quant,
            "dtype": self.dtype,
            "weights_gib": round(self.weight_bytes / GiB, 2),
            "kv_cache_gib": round(self.kv_cache_bytes / GiB, 2),
            "num_gpu_blocks": self.num_blocks,
            "kv_tokens": self.kv_tokens,
        }


# ---------------------------------------------------------------------------------------------------------
# Planning: flags -> Plan, or the error vLLM would raise
# ---------------------------------------------------------------------------------------------------------


def _validation_error(cls: str, msg: str) -> StartupError:
    return StartupError(
        "invalid_config",
        [
            f"pydantic_core._pydantic_core.ValidationError: 1 validation error for {cls}",
            f"  Value error, {msg} [type=value_error, input_value=ArgsKwargs(()), input_type=ArgsKwargs]",
        ],
    )


def _value_error(msg: str, failure: str = "invalid_config", before: Sequence[str] = ()) -> StartupError:
    return StartupError(
        failure,
        [
            *before,
            f"ValueError: {msg}",
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
        ],
    )


def _resolve_dtype(cfg: SimConfig, shape: ModelShape, hw: Hardware) -> str:
    want = cfg.dtype
    if want not in DTYPES:
        raise _validation_error("ModelConfig", f"Unknown dtype: {want!r}")
    if want == "auto":
        d = shape.torch_dtype if shape.torch_dtype in ("bfloat16", "float16") else "bfloat16"
        if shape.quant is not None and shape.quant.method in ("awq", "gptq"):
            d = "float16"
        if d == "bfloat16" and not hw.bf16:
            d = "float16"  # vLLM downcasts with a warning on pre-Ampere GPUs
        if hw.is_cpu and shape.torch_dtype == "float32":
            d = "float32"
        return d
    d = {"half": "float16", "float": "float32"}.get(want, want)
    if d == "bfloat16" and not hw.bf16:
        raise _value_error(
            "Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
            f"Your {hw.description} GPU has compute capability 7.5. You can use float16 instead by "
            "explicitly setting the `dtype` flag in CLI, for example: --dtype=half."
        )
    return d


def _resolve_quant(cfg: SimConfig, shape: ModelShape, hw: Hardware) -> str:
    flag = (cfg.quantization or "").lower() or None
    if flag is not None and flag not in QUANT_METHODS:
        raise _validation_error(
            "ModelConfig", f"Unknown quantization method: {flag}. Must be one of {QUANT_METHODS}."
        )
    ckpt = shape.quant.method if shape.quant is not None else None
    family = {"awq_marlin": "awq", "gptq_marlin": "gptq"}
    f_flag = family.get(flag, flag) if flag else None
    if ckpt is not None:
        if f_flag is not None and f_flag != family.get(ckpt, ckpt):
            raise _validation_error(
                "ModelConfig",
                f"Quantization method specified in the model config ({ckpt}) does not match the quantization "
                f"method specified in the `quantization` argument ({flag}).",
            )
        method = family.get(ckpt, ckpt)
    elif f_flag in ("awq", "gptq"):
        raise _value_error(f"Cannot find the config file for {flag}")
    else:
        method = f_flag or "none"
    if method == "fp8":
        if hw.is_cpu:
            raise _value_error("The quantization method fp8 is not supported for the current platform cpu.")
        if not hw.bf16:  # Turing
            raise _value_error(
                "The quantization method fp8 is not supported for the current GPU. Minimum capability: 80. "
                "Current capability: 75."
            )
    if method in ("awq", "gptq") and hw.is_cpu:
        raise _value_error(f"The quantization method {method} is not supported for the current platform cpu.")
    if method not in ("none", "fp8", "awq", "gptq"):
        raise _value_error(f"Quantization method {method} is not supported by this simulator.")
    return method


def _scheduler(cfg: SimConfig, hw: Hardware, tp: int, max_len: int) -> tuple[bool, bool, int, int]:
    """(chunked prefill, prefix caching, max-num-seqs, max-num-batched-tokens) with vLLM's platform defaults
    and its scheduler checks."""
    chunked = True if cfg.enable_chunked_prefill is None else cfg.enable_chunked_prefill
    prefix = True if cfg.enable_prefix_caching is None else cfg.enable_prefix_caching
    if hw.is_cpu:
        d_mnbt, d_mns = 2048 * tp, 128 * tp
    elif hw.memory_bytes >= 70 * GiB and "a100" not in hw.name.lower():
        d_mnbt, d_mns = 8192, 1024
    else:
        d_mnbt, d_mns = 2048, 256
    mns = cfg.max_num_seqs if cfg.max_num_seqs is not None else d_mns
    if cfg.max_num_batched_tokens is not None:
        mnbt = cfg.max_num_batched_tokens
    else:
        mnbt = d_mnbt if chunked else max(max_len, d_mnbt)
    if mns < 1 or mnbt < 1:
        raise _validation_error("SchedulerConfig", "max_num_seqs and max_num_batched_tokens must be positive")
    if mnbt < max_len and not chunked:
        raise _validation_error(
            "SchedulerConfig",
            f"max_num_batched_tokens ({mnbt}) is smaller than max_model_len ({max_len}). This effectively limits "
            "the maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. "
            "Please increase max_num_batched_tokens or decrease max_model_len.",
        )
    if mnbt < mns:
        raise _validation_error(
            "SchedulerConfig",
            f"max_num_batched_tokens ({mnbt}) must be greater than or equal to max_num_seqs ({mns}).",
        )
    if tp > hw.max_devices:
        raise _value_error(
            f"The number of required GPUs ({tp}) exceeds the total number of available GPUs "
            f"({hw.max_devices}) of this {hw.name} host."
        )
    return chunked, prefix, mns, mnbt


@dataclass(frozen=True)
class _Memory:
    act_bytes: int
    kv_dtype_bytes: int
    weight_bytes: float
    activation_bytes: float
    kv_cache_bytes: float
    num_blocks: int
    kv_bytes_per_token: float


def _memory(
    cfg: SimConfig, shape: ModelShape, hw: Hardware, dtype: str, quant: str, mnbt: int, bs: int, max_len: int
) -> _Memory:
    """Weights, activation peak and KV cache per device as vLLM's memory profiling finds them, or the
    out-of-memory failure it raises."""
    tp = cfg.tensor_parallel_size
    gmu = cfg.gpu_memory_utilization
    # tuner's memory model (tuner.measure.memory): one dtype table, one weights and one KV formula
    act_bytes = DTYPE_BYTES.get(dtype, 2)
    if quant == "fp8":
        lin_bytes: float | None = FP8_BYTES
    elif quant in ("awq", "gptq"):
        bits = shape.quant.bits if shape.quant is not None else 4
        group = shape.quant.group_size if shape.quant is not None else 128
        lin_bytes = int_quant_bytes(bits, group)
    else:
        lin_bytes = None
    weight_dev = weights_per_gpu(shape.params, act_bytes, lin_bytes, tp)
    kv_el = kv_element_bytes(cfg.kv_cache_dtype, act_bytes)
    kv_bpt = shape.kv_bytes_per_token(kv_el, tp)
    activation = (
        hw.act_bytes_per_token_hidden * mnbt * (4 * shape.hidden_size + 2 * shape.intermediate_size / tp)
    )
    requested = gmu * hw.memory_bytes
    if weight_dev + hw.reserve_bytes > hw.memory_bytes:
        need = (weight_dev + hw.reserve_bytes - hw.memory_bytes) / GiB
        raise StartupError(
            "oom",
            [
                f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {need:.2f} GiB. GPU 0 has a total "
                f"capacity of {hw.memory_bytes / GiB:.2f} GiB of which 0 bytes is free.",
                "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
            ],
        )
    kv_bytes = requested - weight_dev - activation - hw.reserve_bytes
    avail_line = f"Available KV cache memory: {kv_bytes / GiB:.2f} GiB"
    if kv_bytes <= 0:
        raise _value_error(
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
            "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, "
            "despite its name). See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more "
            "details.",
            failure="oom",
            before=[avail_line],
        )
    num_blocks = int(kv_bytes // (bs * kv_bpt))
    if num_blocks * bs < max_len:
        needed = math.ceil(max_len / bs) * bs * kv_bpt
        est = num_blocks * bs
        raise _value_error(
            f"To serve at least one request with the model's max seq len ({max_len}), ({needed / GiB:.2f} GiB KV "
            f"cache is needed, which is larger than the available KV cache memory ({kv_bytes / GiB:.2f} GiB). "
            f"Based on the available memory, the estimated maximum model length is {est}. Try increasing "
            "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing "
            "`max_model_len` when initializing the engine.",
            failure="oom",
            before=[avail_line],
        )
    return _Memory(act_bytes, kv_el, weight_dev, activation, kv_bytes, num_blocks, kv_bpt)


def _step_coefficients(
    shape: ModelShape, hw: Hardware, quant: str, dtype: str, tp: int, mem: _Memory
) -> dict[str, float]:
    """The step-time coefficients of :class:`Plan` (see the module docstring)."""
    act_bytes, weight_dev, kv_bpt = mem.act_bytes, mem.weight_bytes, mem.kv_bytes_per_token
    eff = hw.efficiency
    peak16 = hw.bf16_flops
    if quant == "fp8" and hw.fp8_flops is not None:
        peak_lin = hw.fp8_flops * eff.fp8_gemm
    elif quant == "fp8":
        peak_lin = peak16 * eff.quant_gemm  # weight-only FP8 (Marlin) on chips without FP8 tensor cores
    elif quant in ("awq", "gptq"):
        peak_lin = peak16 * eff.quant_gemm * (1.0 if hw.marlin else 0.5)
    else:
        peak_lin = peak16 if dtype != "float32" or hw.is_cpu else peak16 / 8
    c_lin = 2.0 * shape.active_linear_params / tp / (peak_lin * eff.gemm)
    c_head = 2.0 * shape.lm_head_params / tp / (peak16 * eff.gemm)
    c_attn = 4.0 * shape.num_layers * shape.num_heads * shape.head_dim / tp / (peak16 * eff.attention)
    bw = hw.mem_bw * eff.memory
    streamed = weight_dev - shape.params.embedding * act_bytes / tp  # the embedding table is gathered
    if shape.tie_word_embeddings:
        streamed += shape.lm_head_params * act_bytes / tp
    m_fixed = streamed / bw
    m_kv = kv_bpt / bw
    if tp > 1:
        n_ar = 2 * shape.num_layers
        comm_fixed = n_ar * hw.link_latency_s
        comm_token = n_ar * 2.0 * (tp - 1) / tp * shape.hidden_size * act_bytes / hw.link_bw
    else:
        comm_fixed = comm_token = 0.0
    return {
        "c_lin": c_lin,
        "c_head": c_head,
        "c_attn": c_attn,
        "m_fixed": m_fixed,
        "m_kv": m_kv,
        "comm_fixed": comm_fixed,
        "comm_token": comm_token,
        "step_s": eff.step_s,
        "per_seq_s": eff.per_seq_s,
        "per_token_s": eff.per_token_s,
        "overlap_p": eff.overlap_p,
        "ingest_s": eff.ingest_s,
        "mixed_step_s": eff.mixed_step_s,
    }


def plan_engine(cfg: SimConfig) -> Plan:
    """Resolve ``cfg`` as vLLM would, or raise :class:`StartupError` with vLLM's failure text.

    Order of checks follows vLLM's start-up: argument/config validation (``invalid_config``), attention
    backend (block size), then weights and memory profiling (``oom``).
    """
    shape = cfg.shape or load_shape(cfg.model)
    hw = cfg.hw or get_hardware(cfg.hardware)
    gmu = cfg.gpu_memory_utilization
    if not 0 < gmu <= 1:
        raise StartupError(
            "invalid_config",
            [
                "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig",
                "gpu_memory_utilization",
                f"  Input should be {'greater than 0' if gmu <= 0 else 'less than or equal to 1'} "
                f"[type={'greater_than' if gmu <= 0 else 'less_than_equal'}, input_value={gmu}, input_type=float]",
            ],
        )
    tp = cfg.tensor_parallel_size
    if tp < 1:
        raise _validation_error("ParallelConfig", f"tensor_parallel_size must be positive, got {tp}")
    if cfg.kv_cache_dtype not in KV_DTYPES:
        raise StartupError(
            "invalid_config",
            [f"api_server.py: error: argument --kv-cache-dtype: invalid choice: '{cfg.kv_cache_dtype}'"],
        )

    dtype = _resolve_dtype(cfg, shape, hw)
    quant = _resolve_quant(cfg, shape, hw)

    max_len = shape.max_position_embeddings
    if cfg.max_model_len is not None:
        if cfg.max_model_len > max_len:
            raise _validation_error(
                "ModelConfig",
                f"User-specified max_model_len ({cfg.max_model_len}) is greater than the derived max_model_len "
                f"(max_position_embeddings={max_len} or model_max_length=None in model's config.json). To allow "
                "overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.",
            )
        max_len = cfg.max_model_len
    if shape.num_heads % tp != 0:
        raise _validation_error(
            "ModelConfig",
            f"Total number of attention heads ({shape.num_heads}) must be divisible by tensor parallel size ({tp}).",
        )

    chunked, prefix, mns, mnbt = _scheduler(cfg, hw, tp, max_len)
    bs = cfg.block_size if cfg.block_size is not None else hw.default_block_size
    if bs <= 0 or bs % hw.block_multiple != 0:
        reasons = "{" + f"{hw.attention_backend}: [block_size not supported]" + "}"
        raise _value_error(
            f"No valid attention backend found for {hw.device} with AttentionSelectorConfig(head_size="
            f"{shape.head_dim}, dtype=torch.{dtype}, kv_cache_dtype={cfg.kv_cache_dtype}, block_size={bs}, "
            f"use_mla=False, has_sink=False, use_sparse=False). Reasons: {reasons}."
        )
    mem = _memory(cfg, shape, hw, dtype, quant, mnbt, bs, max_len)
    return Plan(
        config=cfg,
        shape=shape,
        hardware=hw,
        max_num_seqs=mns,
        max_num_batched_tokens=mnbt,
        block_size=bs,
        max_model_len=max_len,
        chunked_prefill=chunked,
        prefix_caching=prefix,
        tp=tp,
        quant=quant,
        dtype=dtype,
        kv_dtype_bytes=mem.kv_dtype_bytes,
        weight_bytes=mem.weight_bytes,
        activation_bytes=mem.activation_bytes,
        kv_cache_bytes=mem.kv_cache_bytes,
        num_blocks=mem.num_blocks,
        kv_bytes_per_token=mem.kv_bytes_per_token,
        **_step_coefficients(shape, hw, quant, dtype, tp, mem),
    )


# ---------------------------------------------------------------------------------------------------------
# KV cache: paged blocks, prefix cache with LRU eviction
# ---------------------------------------------------------------------------------------------------------


class _Run:
    """A run of ``n`` never-hashed free blocks inside the free queue."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


class KVCache:
    """Free-block accounting with vLLM's eviction order.

    The free queue holds, oldest first, runs of blank blocks and single blocks that still carry a cached
    hash. Allocation takes from the front (evicting cached hashes it meets); freed blocks go to the back.
    ``ref`` maps every cached hash to its reference count (0: free but still hit-able).
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.free = num_blocks
        self._queue: OrderedDict[Hashable, _Run | None] = OrderedDict()
        first = _Run(num_blocks)
        self._queue[first] = first
        self.ref: dict[Hashable, int] = {}
        self.evictions = 0  # cached hashes dropped to make room

    @property
    def used(self) -> int:
        return self.num_blocks - self.free

    def allocate(self, n: int) -> None:
        """Take ``n`` blocks (the caller checked ``n <= free``)."""
        self.free -= n
        q = self._queue
        while n > 0:
            key, run = next(iter(q.items()))
            if run is None:  # a cached block: evict its hash
                del q[key]
                del self.ref[key]
                self.evictions += 1
                n -= 1
            elif run.n <= n:
                del q[key]
                n -= run.n
            else:
                run.n -= n
                n = 0

    def release_blank(self, n: int) -> None:
        """Return ``n`` un-hashed blocks to the back of the queue."""
        if n > 0:
            run = _Run(n)
            self._queue[run] = run
            self.free += n

    def touch(self, key: Hashable) -> None:
        """Take a reference on a cached block (removing it from the free queue when it was free)."""
        c = self.ref[key]
        if c == 0:
            del self._queue[key]
            self.free -= 1
        self.ref[key] = c + 1

    def unref(self, key: Hashable) -> None:
        """Drop a reference; at zero the block joins the back of the free queue, still hit-able."""
        c = self.ref[key] - 1
        self.ref[key] = c
        if c == 0:
            self._queue[key] = None
            self.free += 1

    def register(self, key: Hashable) -> bool:
        """Make a freshly computed full block hit-able under ``key`` (held once). False if already cached."""
        if key in self.ref:
            return False
        self.ref[key] = 1
        return True

    def park(self, key: Hashable) -> bool:
        """A block being freed keeps its content under ``key`` (back of the queue). False if already cached."""
        if key in self.ref:
            return False
        self.ref[key] = 0
        self._queue[key] = None
        self.free += 1
        return True


# ---------------------------------------------------------------------------------------------------------
# Requests and the engine
# ---------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class SimRequest:
    """One request inside the engine. ``hashes``: chained hashes of the prompt's full blocks that other
    requests may share (shorter than the prompt's full blocks: the rest is unique to this request)."""

    rid: int
    arrival: float  # sent by the client (latencies are measured from here)
    prompt_len: int
    max_tokens: int
    hashes: Sequence[Hashable] = ()
    warmup: bool = False
    record_tokens: bool = False
    tag: Any = None  # the server's handle
    aborted: bool = False
    # state
    ready: float = math.nan  # reached the engine (after the front end's ingest)
    computed: int = 0
    n_out: int = 0
    n_blocks: int = 0
    cached: list[Hashable] = field(default_factory=list)
    own_parked: int = 0  # own generated blocks parked at preemption (hit-able on resume)
    # outputs
    first_token: float = math.nan
    finish: float = math.nan
    last_token: float = math.nan
    preemptions: int = 0
    cached_tokens: int = 0
    token_times: list[float] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.n_out

    def key(self, i: int) -> Hashable:
        """The prefix-cache key of this request's ``i``-th full block."""
        return self.hashes[i] if i < len(self.hashes) else (self.rid, i)


@dataclass
class EngineStats:
    """Counters and gauges over a run (what vLLM's /metrics would show)."""

    steps: int = 0
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    kv_usage_time: float = 0.0  # integral of usage fraction over time
    busy_time: float = 0.0
    kv_usage_max: float = 0.0
    running_max: int = 0
    waiting_max: int = 0
    kv_blocked: int = 0  # admissions refused for want of free blocks
    evictions: int = 0  # cached blocks evicted to make room

    @property
    def kv_limited(self) -> bool:
        """Whether the KV cache's size shaped this run (a refused admission, a preemption or an eviction
        of a cached block). When False, any larger cache gives the very same run."""
        return self.kv_blocked > 0 or self.preemptions > 0 or self.evictions > 0

    @property
    def kv_usage_mean(self) -> float:
        return self.kv_usage_time / self.busy_time if self.busy_time > 0 else 0.0


#: a step's output for one request: (request, new tokens, finished)
TokenEvent = tuple[SimRequest, int, bool]


class Engine:
    """vLLM's engine loop on a simulated clock.

    Use: :meth:`add` requests (with their arrival time), then call :meth:`advance` until :meth:`idle`.
    ``advance`` runs one scheduler step, or several identical decode-only steps at once when nothing else
    could happen in between (no admission possible, no arrival due, no finish, no block shortage, and —
    in online use — no step starting after ``horizon``).
    """

    def __init__(self, plan: Plan, *, bulk: bool = True) -> None:
        self.plan = plan
        self.bulk = bulk  # False: one step per call (the reference path; same results, slower)
        self.kv = KVCache(plan.num_blocks)
        self.now = 0.0
        self.stats = EngineStats()
        self._pending: list[tuple[float, int, SimRequest]] = []  # heap of future arrivals (ready time)
        self._frontend = 0.0  # when the API front end is free to ingest the next request
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        # hot state of ``running``, aligned by index
        self._comp = np.zeros(0, dtype=np.int64)
        self._ntok = np.zeros(0, dtype=np.int64)
        self._left = np.zeros(0, dtype=np.int64)  # output tokens still to produce
        self._nblk = np.zeros(0, dtype=np.int64)
        self._last = np.zeros(0, dtype=float)
        self._warm = np.zeros(0, dtype=bool)
        self._prompt = np.zeros(0, dtype=np.int64)
        self.emit_events = True  # False: advance() returns no per-request events (in-process runs)
        self._any_record = False
        # pooled inter-token gaps (value, weight)
        self.itl_values: list[np.ndarray] = []
        self.itl_weights: list[np.ndarray] = []
        self.finished: list[SimRequest] = []
        self.on_finish: Callable[[SimRequest], None] | None = None

    # ---- queue management ---------------------------------------------------------------------------
    def add(self, req: SimRequest) -> None:
        """Submit ``req``. The API front end ingests requests one at a time (``ingest_s`` each, in
        arrival order); ``req`` becomes schedulable once ingested (``req.ready``)."""
        if req.prompt_len + req.max_tokens > self.plan.max_model_len:
            raise ValueError(
                f"request {req.rid}: prompt ({req.prompt_len}) + max_tokens ({req.max_tokens}) exceeds "
                f"max_model_len ({self.plan.max_model_len})"
            )
        self._any_record = self._any_record or req.record_tokens
        req.ready = max(req.arrival, self._frontend) + self.plan.ingest_s
        self._frontend = req.ready
        if req.ready <= self.now:
            self.waiting.append(req)
        else:
            heapq.heappush(self._pending, (req.ready, req.rid, req))

    def idle(self) -> bool:
        """Nothing running, waiting or pending."""
        return not self.running and not self.waiting and not self._pending

    def next_arrival(self) -> float:
        return self._pending[0][0] if self._pending else math.inf

    def _admit_arrivals(self) -> None:
        while self._pending and self._pending[0][0] <= self.now:
            r = heapq.heappop(self._pending)[2]
            if not r.aborted:
                self.waiting.append(r)
        while self._pending and self._pending[0][2].aborted:
            heapq.heappop(self._pending)

    def abort(self, req: SimRequest) -> None:
        """Drop ``req`` wherever it is (a client went away): its blocks are freed, it produces nothing more."""
        if req.aborted or not math.isnan(req.finish):
            return
        req.aborted = True
        if req in self.running:
            self._write_back()
            self.running.remove(req)
            self._free_request(req, park_own=False)
            self._sync_arrays()
        elif req in self.waiting:
            self.waiting.remove(req)
        self._admit_arrivals()  # drops it from the pending heap when it is at the front

    # ---- running-set arrays -----------------------------------------------------------------------
    def _sync_arrays(self) -> None:
        run = self.running
        self._comp = np.fromiter((r.computed for r in run), dtype=np.int64, count=len(run))
        self._ntok = np.fromiter((r.num_tokens for r in run), dtype=np.int64, count=len(run))
        self._left = np.fromiter((r.max_tokens - r.n_out for r in run), dtype=np.int64, count=len(run))
        self._nblk = np.fromiter((r.n_blocks for r in run), dtype=np.int64, count=len(run))
        self._last = np.fromiter((r.last_token for r in run), dtype=float, count=len(run))
        self._warm = np.fromiter((r.warmup for r in run), dtype=bool, count=len(run))
        self._prompt = np.fromiter((r.prompt_len for r in run), dtype=np.int64, count=len(run))

    def _append_arrays(self, reqs: Sequence[SimRequest]) -> None:
        """Append newly admitted requests (their fields are current) to the hot arrays."""

        def arr(values: Iterable[float], dtype: type) -> np.ndarray:
            return np.fromiter(values, dtype=dtype, count=len(reqs))

        self._comp = np.concatenate((self._comp, arr((r.computed for r in reqs), np.int64)))
        self._ntok = np.concatenate((self._ntok, arr((r.num_tokens for r in reqs), np.int64)))
        self._left = np.concatenate((self._left, arr((r.max_tokens - r.n_out for r in reqs), np.int64)))
        self._nblk = np.concatenate((self._nblk, arr((r.n_blocks for r in reqs), np.int64)))
        self._last = np.concatenate((self._last, arr((r.last_token for r in reqs), float)))
        self._warm = np.concatenate((self._warm, arr((r.warmup for r in reqs), bool)))
        self._prompt = np.concatenate((self._prompt, arr((r.prompt_len for r in reqs), np.int64)))

    def _write_back(self, index: Iterable[int] | None = None) -> None:
        """Copy the hot arrays back into the request objects (all, or the given indices)."""
        for i in range(len(self.running)) if index is None else index:
            r = self.running[i]
            r.computed = int(self._comp[i])
            r.n_out = int(self._ntok[i]) - r.prompt_len
            r.n_blocks = int(self._nblk[i])
            r.last_token = float(self._last[i])

    # ---- KV helpers -------------------------------------------------------------------------------
    def _free_request(self, r: SimRequest, park_own: bool) -> None:
        """Release ``r``'s blocks: private ones (tail first) then its cached references (deepest first)."""
        private = r.n_blocks - len(r.cached)
        if park_own and self.plan.prefix_caching:
            bs = self.plan.block_size
            full = r.computed // bs
            parked = 0
            for i in range(len(r.hashes), full):
                if private - parked <= 0:
                    break
                if self.kv.park((r.rid, i)):
                    parked += 1
            private -= parked
        self.kv.release_blank(private)
        for key in reversed(r.cached):
            self.kv.unref(key)
        r.cached = []
        r.n_blocks = 0

    def _register_blocks(self, r: SimRequest, old_computed: int, new_computed: int) -> None:
        """After a prefill chunk: make the prompt's newly full shareable blocks hit-able."""
        bs = self.plan.block_size
        lo, hi = old_computed // bs, min(new_computed // bs, len(r.hashes))
        for i in range(lo, hi):
            key = r.hashes[i]
            if key not in r.cached and self.kv.register(key):
                r.cached.append(key)

    def _lookup(self, r: SimRequest) -> list[Hashable]:
        """Keys of the cached leading full blocks of ``r``'s tokens (at most ``num_tokens - 1`` tokens)."""
        bs = self.plan.block_size
        limit = (r.num_tokens - 1) // bs
        ref = self.kv.ref
        hits: list[Hashable] = []
        for i in range(limit):
            k = r.key(i)
            if k not in ref:
                break
            hits.append(k)
        return hits

    def _preempt_last(self) -> SimRequest:
        """Preempt the last running request (recompute): free its blocks, put it first in the queue."""
        self._write_back()
        victim = self.running.pop()
        self._free_request(victim, park_own=True)
        victim.computed = 0
        victim.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(victim)
        self._sync_arrays()
        return victim

    # ---- one step -----------------------------------------------------------------------------------
    def advance(self, horizon: float = math.inf) -> list[TokenEvent]:
        """Run the next step (or a bulk of identical decode steps). Returns the tokens it produced.

        When nothing is runnable the clock jumps to the next arrival (no step, no events).
        """
        self._admit_arrivals()
        if not self.running and not self.waiting:
            if self._pending:
                self.now = max(self.now, self._pending[0][0])
                self._admit_arrivals()
            else:
                return []
        if self.bulk and self.running:
            rem = self._ntok - self._comp
            n_prefill = int(np.count_nonzero(rem > 1))
            events: list[TokenEvent] | None = None
            # the bulk decode path stamps no first token: only when every running request has one already
            started = bool(np.all(self._ntok > self._prompt))
            if n_prefill == 0 and started and not self._admission_possible():
                events = self._bulk_decode(horizon)
            elif n_prefill == 1 and rem[-1] > 1:
                events = self._bulk_mixed(horizon)
            if events is not None:
                return events
        return self._full_step()

    def _bulk_mixed(self, horizon: float) -> list[TokenEvent] | None:
        """Steps in which the decodes run and the last request's long prefill takes the rest of the token
        budget (so nothing can be admitted), up to the step before its last chunk."""
        p = self.plan
        bs = p.block_size
        n_dec = len(self.running) - 1
        chunk = p.max_num_batched_tokens - n_dec
        if chunk <= 0:
            return None
        comp, nblk = self._comp, self._nblk
        rem_p = int(self._ntok[-1] - comp[-1])
        k_max = (rem_p - 1) // chunk  # steps whose chunk is full and leaves the prefill unfinished
        if n_dec:
            k_max = min(k_max, int(self._left[:-1].min()))
        if k_max < 1:
            return None
        step = np.ones(n_dec + 1, dtype=np.int64)
        step[-1] = chunk

        def extra(k: int) -> int:
            return int(np.sum(np.maximum(-(-(comp + k * step) // bs) - nblk, 0)))

        free = self.kv.free
        if extra(1) > free:
            return None
        k_max = _most_steps_fitting(extra, free, k_max)
        j = np.arange(k_max, dtype=float)
        c_dec = comp[:-1]
        c_p = float(comp[-1])
        attn = float(np.sum(c_dec + 1)) + n_dec * j + chunk * (c_p + j * chunk + (chunk + 1) / 2.0)
        kv = float(np.sum(c_dec + 1)) + n_dec * j + (c_p + chunk) + j * chunk
        durs = p.step_times(float(n_dec + chunk), float(n_dec + 1), attn, kv) + p.mixed_step_s
        ends = self.now + np.cumsum(durs)
        k = k_max
        if horizon < math.inf:
            k = max(1, min(k, int(np.searchsorted(ends - durs, horizon, side="right"))))
        durs, ends = durs[:k], ends[:k]
        t_end = float(ends[-1])
        self._account(t_end - self.now, k)
        self.kv.allocate(extra(k))
        old_p = int(comp[-1])
        self._comp = comp + k * step
        self._nblk = np.maximum(nblk, -(-self._comp // bs))
        new_tok = np.zeros(n_dec + 1, dtype=np.int64)
        if n_dec:
            measured = ~self._warm[:-1]
            self.itl_values.append(ends[0] - self._last[:-1])
            self.itl_weights.append(measured.astype(float))
            n_measured = float(measured.sum())
            if k > 1 and n_measured > 0:
                self.itl_values.append(durs[1:])
                self.itl_weights.append(np.full(k - 1, n_measured))
            new_tok[:-1] = k
            self._ntok = self._ntok + new_tok
            self._left = self._left - new_tok
            self._last[:-1] = t_end
            self.stats.generation_tokens += n_dec * k
            if self._any_record:
                times = ends.tolist()
                for r in self.running[:-1]:
                    if r.record_tokens:
                        r.token_times.extend(times)
        if p.prefix_caching:
            r = self.running[-1]
            if r.hashes and old_p < len(r.hashes) * bs:
                self._register_blocks(r, old_p, int(self._comp[-1]))
        self.now = t_end
        return self._finish_step(new_tok)

    def _admission_possible(self) -> bool:
        """Could a waiting request (now or arriving before the next finish) be admitted in a decode step?"""
        p = self.plan
        if len(self.running) >= p.max_num_seqs:
            return False
        if not self.waiting:
            return False  # arrivals are bounded separately
        r = self.waiting[0]
        budget = p.max_num_batched_tokens - len(self.running)
        if budget <= 0:
            return False
        hits = self._lookup(r) if (p.prefix_caching and r.computed == 0) else []
        hit_tokens = len(hits) * p.block_size
        n = r.num_tokens - hit_tokens
        if not p.chunked_prefill and n > budget:
            return False
        n = min(n, budget)
        need = -(-(hit_tokens + n) // p.block_size) - len(hits)
        evictable = sum(1 for k in hits if self.kv.ref[k] == 0)
        return need <= self.kv.free - evictable

    def _bulk_decode(self, horizon: float) -> list[TokenEvent] | None:
        p = self.plan
        bs = p.block_size
        comp, nblk = self._comp, self._nblk
        batch = len(self.running)
        k_max = int(self._left.min())
        free = self.kv.free

        def extra(k: int) -> int:
            return int(np.sum(np.maximum(-(-(comp + k) // bs) - nblk, 0)))

        if extra(1) > free:
            return None  # the very next step preempts: take the exact path
        k_max = _most_steps_fitting(extra, free, k_max)
        kv0 = float(np.sum(comp + 1))
        durs = p.decode_step_times(batch, kv0, k_max)
        ends = self.now + np.cumsum(durs)
        starts = ends - durs
        k = k_max
        if not self.waiting and batch < p.max_num_seqs and self._pending:
            k = min(k, int(np.searchsorted(starts, self.next_arrival(), side="left")))
        if horizon < math.inf:
            k = min(k, int(np.searchsorted(starts, horizon, side="right")))
        k = max(k, 1)
        durs, ends = durs[:k], ends[:k]
        t_end = float(ends[-1])
        self._account(t_end - self.now, k)
        self.kv.allocate(extra(k))
        measured = ~self._warm
        self.itl_values.append(ends[0] - self._last)
        self.itl_weights.append(measured.astype(float))
        n_measured = float(measured.sum())
        if k > 1 and n_measured > 0:
            self.itl_values.append(durs[1:])
            self.itl_weights.append(np.full(k - 1, n_measured))
        self._comp = comp + k
        self._ntok = self._ntok + k
        self._left = self._left - k
        self._nblk = np.maximum(nblk, -(-self._comp // bs))
        self._last = np.full(batch, t_end)
        self.stats.generation_tokens += batch * k
        self.now = t_end
        if self._any_record:
            times = ends.tolist()
            for r in self.running:
                if r.record_tokens:
                    r.token_times.extend(times)
        return self._finish_step(np.full(batch, k, dtype=np.int64))

    def _account(self, dt: float, steps: int) -> None:
        st = self.stats
        st.steps += steps
        usage = self.kv.used / self.plan.num_blocks if self.plan.num_blocks else 0.0
        st.kv_usage_time += usage * dt
        st.busy_time += dt
        st.kv_usage_max = max(st.kv_usage_max, usage)
        st.running_max = max(st.running_max, len(self.running))
        st.waiting_max = max(st.waiting_max, len(self.waiting))

    def _full_step(self) -> list[TokenEvent]:
        p = self.plan
        bs = p.block_size
        budget = p.max_num_batched_tokens
        # ---- running requests, in order: min(remaining, budget left) each ------------------------------
        rem = self._ntok - self._comp
        if len(rem):
            before = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(rem)[:-1]))
            sched = np.clip(budget - before, 0, rem)
        else:
            sched = rem.copy()
        need = np.where(sched > 0, np.maximum(-(-(self._comp + sched) // bs) - self._nblk, 0), 0)
        preempted = False
        if int(need.sum()) > self.kv.free:
            sched, need = self._schedule_with_preemption()
            preempted = True
        self.kv.allocate(int(need.sum()))
        self._nblk = self._nblk + need
        budget -= int(sched.sum())
        # ---- waiting requests, FCFS (none in a step that preempted) ------------------------------------
        if not preempted and self.waiting:
            admitted = self._admit(budget)
            if admitted:
                self.running.extend(r for r, _ in admitted)
                self._append_arrays([r for r, _ in admitted])
                sched = np.concatenate((sched, np.array([n for _, n in admitted], dtype=np.int64)))
        active = sched > 0
        if not active.any():
            nxt = self.next_arrival()  # nothing fits now: wait for the next arrival
            if nxt < math.inf:
                self.now = nxt
            return []
        comp = self._comp
        dt = p.step_time(
            float(sched.sum()),
            float(active.sum()),
            float(np.sum(sched * (comp + (sched + 1) / 2.0))),
            float(np.sum(np.where(active, comp + sched, 0))),
        )
        if bool(np.any(sched > 1)):
            dt += p.mixed_step_s
        self._account(dt, 1)
        self.now += dt
        # ---- apply: computed tokens, prefix-cache registration, sampling ------------------------------
        prefill = active & (self._ntok - comp > 1)
        self._comp = comp + sched
        if p.prefix_caching and prefill.any():
            for i in np.nonzero(prefill)[0]:
                r = self.running[int(i)]
                if r.hashes and int(comp[i]) < len(r.hashes) * bs:
                    self._register_blocks(r, int(comp[i]), int(self._comp[i]))
        sampled = active & (self._comp == self._ntok)
        new_tok = sampled.astype(np.int64)
        self._ntok = self._ntok + new_tok
        self._left = self._left - new_tok
        self.stats.generation_tokens += int(new_tok.sum())
        had = sampled & ~np.isnan(self._last)
        if had.any():
            self.itl_values.append(self.now - self._last[had])
            self.itl_weights.append((~self._warm[had]).astype(float))
        for i in np.nonzero(sampled & (self._ntok - self._prompt == 1))[0]:
            self.running[int(i)].first_token = self.now
        if self._any_record:
            for i in np.nonzero(sampled)[0]:
                r = self.running[int(i)]
                if r.record_tokens:
                    r.token_times.append(self.now)
        self._last = np.where(sampled, self.now, self._last)
        return self._finish_step(new_tok)

    def _schedule_with_preemption(self) -> tuple[np.ndarray, np.ndarray]:
        """vLLM's running loop when blocks run out: preempt from the back until the request fits."""
        p = self.plan
        bs = p.block_size
        budget = p.max_num_batched_tokens
        out_s: list[int] = []
        out_n: list[int] = []
        i = 0
        free = self.kv.free
        while i < len(self.running) and budget > 0:
            r = self.running[i]
            n = min(int(self._ntok[i] - self._comp[i]), budget)
            need = max(-(-(int(self._comp[i]) + n) // bs) - int(self._nblk[i]), 0)
            scheduled = True
            while need > free:
                victim = self._preempt_last()
                free = self.kv.free - sum(out_n)
                if victim is r:
                    scheduled = False
                    break
            if not scheduled:
                break
            out_s.append(n)
            out_n.append(need)
            free -= need
            budget -= n
            i += 1
        m = len(self.running)
        s = np.zeros(m, dtype=np.int64)
        nd = np.zeros(m, dtype=np.int64)
        s[: len(out_s)] = out_s
        nd[: len(out_n)] = out_n
        return s, nd

    def _admit(self, budget: int) -> list[tuple[SimRequest, int]]:
        p = self.plan
        bs = p.block_size
        out: list[tuple[SimRequest, int]] = []
        n_run = len(self.running)
        while self.waiting and budget > 0 and n_run + len(out) < p.max_num_seqs:
            r = self.waiting[0]
            hits = self._lookup(r) if (p.prefix_caching and r.computed == 0) else []
            hit_tokens = len(hits) * bs
            n = r.num_tokens - hit_tokens
            if not p.chunked_prefill and n > budget:
                break
            n = min(n, budget)
            need = -(-(hit_tokens + n) // bs) - len(hits)
            evictable = sum(1 for k in hits if self.kv.ref[k] == 0)
            if need > self.kv.free - evictable:
                self.stats.kv_blocked += 1
                break
            self.waiting.popleft()
            for k in hits:
                self.kv.touch(k)
            self.kv.allocate(need)
            r.cached = list(hits)
            r.n_blocks = len(hits) + need
            r.computed = hit_tokens
            if r.preemptions == 0:
                self.stats.prompt_tokens += r.prompt_len
            if p.prefix_caching and r.preemptions == 0:
                self.stats.prefix_queries += r.prompt_len
                self.stats.prefix_hits += min(hit_tokens, r.prompt_len)
                r.cached_tokens = hit_tokens
            out.append((r, n))
            budget -= n
        return out

    def _finish_step(self, new_tok: np.ndarray) -> list[TokenEvent]:
        done = self._left <= 0
        run = self.running
        events: list[TokenEvent] = []
        if self.emit_events:
            for i in np.nonzero(new_tok)[0]:
                events.append((run[int(i)], int(new_tok[i]), bool(done[i])))
        if done.any():
            idx = [int(i) for i in np.nonzero(done)[0]]
            self._write_back(idx)
            for i in idx:
                r = run[i]
                r.finish = self.now
                self._free_request(r, park_own=False)
                self.finished.append(r)
            keep = ~done
            self.running = [r for r, k in zip(run, keep.tolist(), strict=True) if k]
            self._comp = self._comp[keep]
            self._ntok = self._ntok[keep]
            self._left = self._left[keep]
            self._nblk = self._nblk[keep]
            self._last = self._last[keep]
            self._warm = self._warm[keep]
            self._prompt = self._prompt[keep]
            if self.on_finish is not None:
                for i in idx:
                    self.on_finish(run[i])
        return events


# ---------------------------------------------------------------------------------------------------------
# Workloads, in-process runs and summaries
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimWorkload:
    """A load run: fixed-length prompts and outputs, closed-loop ``concurrency`` or open-loop ``rate``.

    ``rate=math.inf`` sends every request at t=0 (``vllm bench serve --request-rate inf``). With neither
    concurrency nor rate, all requests arrive at t=0. ``shared_prefix_tokens``: the first tokens of every
    prompt are the same (a system prompt). ``client_gap_s``: time between a finish and the next send in
    closed loop (client and network). ``warmup_requests`` are sent first and left out of the summary.
    """

    input_tokens: int
    output_tokens: int
    requests: int
    concurrency: int | None = None
    rate: float | None = None
    shared_prefix_tokens: int = 0
    warmup_requests: int = 0
    client_gap_s: float = 0.0
    seed: int = 0

    def with_(self, **kw: Any) -> SimWorkload:
        return replace(self, **kw)


@dataclass
class SimResult:
    """What :func:`simulate` measured: tuner's :class:`Summary`, engine counters, optional raw records."""

    summary: Summary
    stats: EngineStats
    plan: Plan
    records: list[RequestRecord] | None = None
    aborted: bool = False  # stopped early by ``ttft_abort_ms``


def _prompt_hashes(plan: Plan, w: SimWorkload) -> tuple[Hashable, ...]:
    n = w.shared_prefix_tokens // plan.block_size
    return tuple(("prefix", i) for i in range(n))


def simulate(
    config: SimConfig | Plan,
    workload: SimWorkload,
    *,
    slo: Mapping[str, float] | None = None,
    records: bool = False,
    bulk: bool = True,
    ttft_abort_ms: float | None = None,
) -> SimResult:
    """Run ``workload`` against ``config`` on the simulated clock and summarise it like tuner does.

    Raises :class:`StartupError` when vLLM would not start with ``config``. ``slo`` (metric -> ms) sets the
    goodput figures. ``records=True`` also returns one :class:`RequestRecord` per request with every token
    time (slower; for tests and cross-checks). ``bulk=False`` steps one engine step at a time (the reference
    the bulk decode path must match). Deterministic: the same inputs give the same result.
    """
    plan = config if isinstance(config, Plan) else plan_engine(config)
    eng = Engine(plan, bulk=bulk)
    eng.emit_events = False
    w = workload
    total = w.requests + w.warmup_requests
    hashes = _prompt_hashes(plan, w)
    issued = 0

    def make(t: float) -> SimRequest:
        nonlocal issued
        r = SimRequest(
            rid=issued,
            arrival=t,
            prompt_len=w.input_tokens,
            max_tokens=w.output_tokens,
            hashes=hashes,
            warmup=issued < w.warmup_requests,
            record_tokens=records,
        )
        issued += 1
        return r

    slow = 0
    aborted = False

    def on_finish(r: SimRequest) -> None:
        nonlocal slow, aborted
        if ttft_abort_ms is not None and not r.warmup and (r.first_token - r.arrival) * 1e3 > ttft_abort_ms:
            slow += 1
            aborted = settled_broken(slow, w.requests, 0.99)  # the p99 is over it whatever comes
        if w.concurrency is not None and issued < total:
            eng.add(make(eng.now + w.client_gap_s))

    eng.on_finish = on_finish
    for t in _first_arrivals(w):
        eng.add(make(t))
    guard = 0
    while not eng.idle() and not aborted:
        before = (eng.now, len(eng.finished))
        eng.advance()
        if (eng.now, len(eng.finished)) == before and not eng.running:
            guard += 1
            if guard > 3:
                break  # a request that can never be scheduled (cannot happen after plan checks)
        else:
            guard = 0
    eng.stats.evictions = eng.kv.evictions
    summary = summarize_engine(
        eng, slo=slo, load={"concurrency": w.concurrency, "rate": w.rate, "requests": w.requests}
    )
    recs = _records(eng.finished) if records else None
    return SimResult(summary=summary, stats=eng.stats, plan=plan, records=recs, aborted=aborted)


def _first_arrivals(w: SimWorkload) -> list[float]:
    """Send times known up front: the first ``concurrency`` requests at t=0 (closed loop), else every request
    (Poisson arrivals at ``rate``, all at t=0 without a finite rate)."""
    total = w.requests + w.warmup_requests
    if w.concurrency is not None:
        return [0.0] * min(w.concurrency, total)
    rng = np.random.default_rng(w.seed)
    out: list[float] = []
    t = 0.0
    for _ in range(total):
        out.append(t)
        if w.rate is not None and math.isfinite(w.rate):
            t += float(rng.exponential(1.0 / w.rate))
    return out


def _records(done: Iterable[SimRequest]) -> list[RequestRecord]:
    out = []
    for r in sorted(done, key=lambda x: x.rid):
        out.append(
            RequestRecord(
                send_time=r.arrival,
                first_token_time=r.first_token,
                token_times=list(r.token_times),
                chunk_tokens=[1] * len(r.token_times),
                end_time=r.finish,
                prompt_tokens=r.prompt_len,
                output_tokens=r.n_out,
                expected_output_tokens=r.max_tokens,
                warmup=r.warmup,
            )
        )
    return out


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, pcts: Sequence[float]) -> list[float]:
    """numpy's linear-interpolation percentiles of ``values`` each repeated ``weights`` times (integers)."""
    if values.size == 0:
        return [math.nan] * len(pcts)
    order = np.argsort(values, kind="stable")
    v = values[order]
    c = np.cumsum(weights[order])
    n = c[-1]
    out = []
    for q in pcts:
        pos = q / 100.0 * (n - 1)
        lo = math.floor(pos)
        frac = pos - lo
        i_lo = int(np.searchsorted(c, lo + 1, side="left"))
        i_hi = int(np.searchsorted(c, min(lo + 2, n), side="left"))
        out.append(float(v[i_lo] + (v[i_hi] - v[i_lo]) * frac))
    return out


def _dist(values_ms: np.ndarray, weights: np.ndarray | None = None) -> Distribution:
    if values_ms.size == 0:
        return Distribution()
    if weights is None:
        return Distribution.of(values_ms)
    p50, p90, p95, p99 = weighted_percentiles(values_ms, weights, (50, 90, 95, 99))
    mean = float(np.sum(values_ms * weights) / np.sum(weights))
    return Distribution(mean, p50, p90, p99, int(np.sum(weights)), p95)


def summarize_engine(
    eng: Engine, *, slo: Mapping[str, float] | None = None, load: Mapping[str, Any] | None = None
) -> Summary:
    """The same figures as :func:`tuner.measure.metrics.summarize` computes from records (warm-up excluded),
    computed from the engine's own state (ITL pooled from weighted step gaps)."""
    done = [r for r in eng.finished if not r.warmup]
    if not done:
        return Summary(
            0.0, 0, 0, 0, 0, 0.0, 0.0, 0.0, Distribution(), Distribution(), Distribution(), Distribution()
        )
    send = np.array([r.arrival for r in done])
    first = np.array([r.first_token for r in done])
    end = np.array([r.finish for r in done])
    nout = np.array([r.n_out for r in done], dtype=float)
    nin = np.array([r.prompt_len for r in done], dtype=float)
    duration = float(end.max() - send.min())
    ttft = (first - send) * 1e3
    e2e = (end - send) * 1e3
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_all = np.where(nout > 1, (end - first) * 1e3 / (nout - 1), np.nan)
    tpot = tpot_all[~np.isnan(tpot_all)]
    itl_v = np.concatenate(eng.itl_values) if eng.itl_values else np.zeros(0)
    itl_w = np.concatenate(eng.itl_weights) if eng.itl_weights else np.zeros(0)
    keep = itl_w > 0
    itl_v, itl_w = itl_v[keep], itl_w[keep]
    gen = float(nout.sum())
    prompt = float(nin.sum())

    def rate(x: float) -> float:
        return x / duration if duration > 0 else math.nan

    good_rps = good_tok = math.nan
    if slo:
        per_request = {"ttft": ttft, "tpot": tpot_all, "e2e": e2e}
        ok = np.ones(len(done), dtype=bool)
        for name, limit in slo.items():
            kind = request_latency(name)
            if kind is not None:  # as tuner.measure.metrics: no figure (nan) is not held against a request
                v = per_request[kind]
                ok &= np.isnan(v) | within(v, limit)
        good_rps = rate(float(ok.sum()))
        good_tok = rate(float(nout[ok].sum()))
    return Summary(
        duration_s=duration,
        completed=len(done),
        failed=0,
        generated_tokens_total=int(gen),
        prompt_tokens_total=int(prompt),
        output_throughput_tok_s=rate(gen),
        total_throughput_tok_s=rate(gen + prompt),
        request_throughput_rps=rate(len(done)),
        ttft_ms=Distribution.of(ttft),
        itl_ms=_dist(itl_v * 1e3, itl_w),
        tpot_ms=Distribution.of(tpot),
        e2e_ms=Distribution.of(e2e),
        goodput_rps=good_rps,
        goodput_tok_s=good_tok,
        load=dict(load or {}),
    )


# ---------------------------------------------------------------------------------------------------------
# Capacity mode: tuner's rule (tuner.measure.capacity), each level run on the simulator
# ---------------------------------------------------------------------------------------------------------


@dataclass
class CapacityResult:
    """Capacity mode: every step as (level, summary); ``scored`` the step tuner scores (the best meeting the
    SLO, else the nearest miss); ``best`` the same index when it meets the SLO, else ``None``."""

    steps: list[tuple[float, Summary]]
    scored: int
    feasible: bool
    stop: str | None = None  # why stepping stopped (tuner.measure.capacity.should_stop), None: ladder ran out
    kv_limited: bool = False  # some step was shaped by the KV cache's size (see EngineStats.kv_limited)
    preemptions: int = 0

    @property
    def best(self) -> int | None:
        return self.scored if self.feasible else None

    @property
    def throughput(self) -> float:
        """Output tok/s of the best feasible step, 0.0 when none met the SLO."""
        return self.steps[self.scored][1].output_throughput_tok_s if self.feasible else 0.0


def capacity(
    config: SimConfig | Plan,
    workload: SimWorkload,
    slo: Mapping[str, float],
    cap: CapacitySpec | None = None,
    *,
    max_failed_fraction: float = DEFAULT_MAX_FAILED_FRACTION,
) -> CapacityResult:
    """Tuner's capacity mode (:func:`tuner.measure.capacity.run_ladder`: levels, requests per step, stop
    rule, scored step) with each level run by :func:`simulate`: closed-loop concurrency, or Poisson arrivals
    at that rate when ``workload.rate`` is set. ``cap`` defaults to a study file's default ``capacity:``.

    A step whose TTFT p99 is settled over its limit is cut short and marked pruned, as tuner's
    :class:`tuner.measure.watch.StepWatch` does (``cap.prune``; without it, once settled over
    ``stop_factor`` x the limit, where the rule stops either way)."""
    plan = config if isinstance(config, Plan) else plan_engine(config)
    spec = cap if cap is not None else CapacitySpec()
    is_rate = workload.rate is not None
    # tuner's pruning (tuner.measure.watch) ends a step once its TTFT p99 is settled over the limit;
    # without it, the ladder's stop rule is settled at stop_factor x the limit
    limit = slo.get("ttft_p99")
    abort = None if limit is None else (limit if spec.prune else spec.stop_factor * limit)
    kv_limited = False
    preemptions = 0

    def measure(i: int, level: float, n: int) -> Summary:
        nonlocal kv_limited, preemptions
        w = workload.with_(
            concurrency=None if is_rate else max(1, int(level)),
            rate=level if is_rate else None,
            requests=n,
            seed=workload.seed + i,
        )
        res = simulate(plan, w, slo=slo, ttft_abort_ms=abort)
        kv_limited = kv_limited or res.stats.kv_limited
        preemptions += res.stats.preemptions
        if res.aborted and spec.prune:
            return dataclasses.replace(res.summary, pruned="ttft_p99 settled over its limit")
        return res.summary

    lad = run_ladder(spec, workload.requests, is_rate, slo, max_failed_fraction, measure)
    return CapacityResult(
        steps=list(zip(lad.levels, lad.steps, strict=True)),
        scored=lad.scored,
        feasible=lad.feasible,
        stop=lad.stop,
        kv_limited=kv_limited,
        preemptions=preemptions,
    )


def _most_steps_fitting(extra: Callable[[int], int], free: int, k_max: int) -> int:
    """The most steps ``k <= k_max`` whose extra KV blocks ``extra(k)`` (non-decreasing) fit in ``free``,
    given that one step fits (bisection)."""
    if extra(k_max) <= free:
        return k_max
    lo, hi = 1, k_max  # extra(lo) <= free < extra(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if extra(mid) <= free:
            lo = mid
        else:
            hi = mid
    return lo
