"""Will a configuration fit on the GPU? A predictive memory check before a server is started. Pure.

:func:`check_fits` compares, per GPU, what vLLM must hold with ``gpu-memory-utilization x memory``::

    need = weights + reserve + KV cache for ONE sequence of max-model-len tokens (rounded up to a block)
    have = gpu-memory-utilization x gpu_memory_bytes            (pass the memory total NVML reports)

which is the test vLLM itself makes after profiling ("No available memory for the cache blocks" when the
KV room is negative; "... max seq len ... larger than the available KV cache memory" when it is too small
for one sequence). ``fits`` is False only when the estimate is certain enough to skip a start: a config
whose architecture the estimate does not know gives ``fits=True, known=False``.

* **weights** = parameters x bytes, with parameters counted from ``config.json``: token embeddings, per
  layer attention (q, o: hidden x heads x head_dim; k, v: hidden x kv_heads x head_dim, i.e. GQA; MLA for
  DeepSeek-style configs), the MLP (gated: 3 matrices; MoE: experts, shared experts and the router), norms,
  and ``lm_head`` unless ``tie_word_embeddings``. Bytes per parameter: the dtype (``--dtype``, else the
  config's; ``auto`` maps float32 to 2 bytes as vLLM does), except for linear layers under quantization:
  ``fp8`` 1 byte; ``awq``/``gptq`` (and their marlin kernels, ``compressed-tensors``, ``bitsandbytes``)
  ``bits/8`` plus a 16-bit scale and a ``bits`` zero point per ``group_size`` weights (4-bit, group 128:
  0.52 byte). Embeddings and ``lm_head`` stay in the dtype. The quantization is the ``--quantization`` flag,
  else the checkpoint's ``quantization_config.quant_method``.
* **KV bytes per token** = 2 (K and V) x layers x kv_heads x head_dim x KV dtype bytes (``--kv-cache-dtype``
  ``fp8*``: 1 byte; ``auto``: the model dtype). MLA caches one latent: layers x (kv_lora_rank + rope dim).
* **reserve** (activations of the profiling pass, sampler buffers, CUDA graphs, non-torch allocations) =
  :data:`RESERVE_BASE_BYTES` (1.5 GiB) + max-num-batched-tokens x hidden x
  :data:`RESERVE_BYTES_PER_BATCHED_TOKEN_PER_HIDDEN` (6 bytes). Calibrated on the H200 (143771 MiB,
  vLLM 0.26.0, Llama-3.1-8B shape, bf16): weights 14.96 GiB (vLLM logged 15.0); at 0.92 the KV room
  left is 112.52 GiB against 112.51 logged (921,696 tokens); at 0.5 with 2048 batched tokens 53.70 against
  53.66 GiB; with ``--quantization fp8`` 119.02 against 118.74 GiB; at 0.05 -9.63 against -9.11 GiB.
* **tensor parallel** (``--tensor-parallel-size``) divides weights and KV heads per GPU (KV heads are
  replicated when there are fewer than GPUs); **pipeline parallel** divides the layers.
* ``--max-model-len`` defaults to the config's (the smallest of its length keys, times a linear/dynamic/
  yarn RoPE factor); ``--block-size`` to 16; ``--max-num-batched-tokens`` to 8192;
  ``--gpu-memory-utilization`` to 0.92 (vLLM 0.26's default; older releases used 0.9);
  ``--cpu-offload-gb`` moves that much of the weights off the GPU.

Flags are given as tuner's flag dict (``{"max-model-len": 4096, ...}``; ``_`` spellings are accepted too).

This is the one memory model: the simulator (:mod:`tuner.sim.model_shape`, :func:`tuner.sim.engine.plan_engine`)
counts parameters with :func:`param_count`, sizes them with :data:`DTYPE_BYTES`, :func:`int_quant_bytes` and
:func:`weights_per_gpu`, and sizes the KV cache with :func:`kv_element_bytes` and :func:`kv_token_bytes`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GiB = 1024**3

#: fixed part of the reserve: CUDA graphs, sampler and logits buffers, NCCL/cuBLAS workspaces
RESERVE_BASE_BYTES = int(1.5 * GiB)
#: activation part of the reserve: bytes per batched token per unit of hidden size (a few live hidden states)
RESERVE_BYTES_PER_BATCHED_TOKEN_PER_HIDDEN = 6
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
DEFAULT_BLOCK_SIZE = 16
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192

#: bytes per element by dtype name (``--dtype``, ``torch_dtype``, ``--kv-cache-dtype``)
DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "fp32": 4,
    "float16": 2,
    "half": 2,
    "fp16": 2,
    "bfloat16": 2,
    "bf16": 2,
    "float8": 1,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}
#: bytes per weight of a linear layer under fp8 quantization
FP8_BYTES = 1.0
_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
_UNGATED_MLP = ("gpt2", "gpt_neox", "gpt_bigcode", "opt", "falcon", "gptj", "bloom", "phi", "starcoder2")
_INT4_METHODS = ("awq", "gptq", "awq_marlin", "gptq_marlin", "marlin", "gptq_marlin_24", "bitsandbytes")


@dataclass(frozen=True)
class FitVerdict:
    """The check's answer. Bytes are per GPU. ``kv_tokens_estimate`` is how many tokens of KV cache the room
    left after weights and reserve holds (whole blocks; 0 when negative; ``None`` when not ``known``)."""

    fits: bool
    need_bytes: int
    have_bytes: int
    kv_tokens_estimate: int | None
    reason: str
    known: bool = True
    weights_bytes: int = 0
    reserve_bytes: int = 0
    kv_bytes_per_token: int = 0
    kv_room_bytes: int = 0  # have - weights - reserve: vLLM's "Available KV cache memory" (may be < 0)
    max_model_len: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "fits": self.fits,
            "known": self.known,
            "need_gib": round(self.need_bytes / GiB, 2),
            "have_gib": round(self.have_bytes / GiB, 2),
            "weights_gib": round(self.weights_bytes / GiB, 2),
            "kv_room_gib": round(self.kv_room_bytes / GiB, 2),
            "kv_tokens_estimate": self.kv_tokens_estimate,
            "max_model_len": self.max_model_len,
            "reason": self.reason,
        }


class _Unknown(ValueError):
    """The config lacks what the estimate needs."""


# -- reading config and flags ------------------------------------------------------------------------------


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = config.get("text_config")
    if isinstance(inner, Mapping) and any(k in inner for k in ("hidden_size", "num_hidden_layers")):
        return {**inner, **{k: v for k, v in config.items() if k == "quantization_config"}}
    return config


def _int(cfg: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            return int(v)
    if default is None:
        raise _Unknown(f"config.json has no {keys[0]}")
    return default


def _flag(flags: Mapping[str, Any], name: str) -> Any:
    for k in (name, name.replace("-", "_")):
        if k in flags:
            v = flags[k]
            return None if isinstance(v, str) and v.strip().lower() in ("none", "auto", "") else v
    return None


def _num(value: Any, name: str) -> float:
    """A flag value as a number: ints, floats, and texts such as ``"4096"``, ``"32k"``, ``"1M"``."""
    if isinstance(value, bool):
        raise _Unknown(f"--{name} {value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgG]?)\s*", str(value))
    if not m:
        raise _Unknown(f"--{name} {value!r} is not a number")
    scale = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}[m.group(2).lower()]
    if m.group(2) in ("K", "M", "G"):
        scale = {"K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)]
    return float(m.group(1)) * scale


def model_dtype_bytes(config: Mapping[str, Any], flags: Mapping[str, Any]) -> int:
    """Bytes per unquantized parameter: ``--dtype`` else the config's ``torch_dtype``/``dtype``; ``auto`` with a
    float32 checkpoint gives 2 (vLLM serves it in 16 bits); unknown gives 2."""
    explicit = _flag(flags, "dtype")
    if explicit is not None:
        return DTYPE_BYTES.get(str(explicit).lower().removeprefix("torch."), 2)
    cfg = _text_config(config)
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or config.get("dtype")
    b = DTYPE_BYTES.get(str(raw).lower().removeprefix("torch."), 2) if raw else 2
    return 2 if b == 4 else b


def _quantization(config: Mapping[str, Any], flags: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(method, bytes per quantized linear parameter); bytes None means "as the dtype"."""
    qc = config.get("quantization_config")
    qc = qc if isinstance(qc, Mapping) else {}
    flag = _flag(flags, "quantization")
    method = (
        str(flag).lower()
        if flag is not None
        else (str(qc["quant_method"]).lower() if "quant_method" in qc else None)
    )
    if method is None:
        return None, None
    if method.startswith("fp8") or method in ("fbgemm_fp8", "modelopt", "ptpc_fp8"):
        return method, FP8_BYTES
    bits = qc.get("bits") or qc.get("w_bit") or qc.get("num_bits")
    if method == "compressed-tensors":
        for group in (qc.get("config_groups") or {}).values():
            w = group.get("weights") if isinstance(group, Mapping) else None
            if isinstance(w, Mapping) and w.get("num_bits"):
                bits = w["num_bits"]
                if w.get("type") == "float" or int(bits) == 8:
                    return method, float(bits) / 8
                qc = {**qc, "group_size": w.get("group_size") or 128}
                break
    if method in _INT4_METHODS or method == "compressed-tensors" or bits:
        if method == "bitsandbytes" and not bits:
            bits = 8 if qc.get("load_in_8bit") else 4
        b = float(bits or 4)
        group = qc.get("group_size") or qc.get("q_group_size") or 128
        group = 128 if not isinstance(group, int | float) or group <= 0 else group
        return method, int_quant_bytes(b, float(group))
    return method, None


def int_quant_bytes(bits: float, group_size: float) -> float:
    """Bytes per weight of a ``bits``-bit group-quantized linear layer (AWQ, GPTQ and alike): the packed
    weight plus a 16-bit scale and a ``bits``-bit zero point per ``group_size`` weights."""
    return bits / 8 + (2 + bits / 8) / group_size


# -- counting ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCount:
    """Parameters by kind. ``linear`` is what quantization shrinks; ``layers`` is everything in the blocks."""

    embedding: int
    lm_head: int
    linear: int
    other: int  # norms, biases, routers: kept in the dtype

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.linear + self.other


def param_count(config: Mapping[str, Any]) -> ParamCount:
    """Parameters of the architecture in ``config.json``. Raises ``ValueError`` when it lacks a size."""
    cfg = _text_config(config)
    h = _int(cfg, "hidden_size", "n_embd", "d_model")
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(cfg, "num_attention_heads", "n_head", "num_heads")
    kv_heads = _int(cfg, "num_key_value_heads", "num_kv_heads", default=heads)
    head_dim = _int(cfg, "head_dim", default=h // heads)
    inter = _int(cfg, "intermediate_size", "n_inner", "ffn_dim", default=4 * h)
    vocab = _int(cfg, "vocab_size")
    model_type = str(cfg.get("model_type", "")).lower()

    if cfg.get("kv_lora_rank"):  # MLA (DeepSeek-V2/V3 style)
        rope = _int(cfg, "qk_rope_head_dim")
        nope = _int(cfg, "qk_nope_head_dim")
        v_dim = _int(cfg, "v_head_dim", default=nope)
        kv_rank = _int(cfg, "kv_lora_rank")
        q_rank = cfg.get("q_lora_rank")
        q = h * q_rank + q_rank * heads * (nope + rope) if q_rank else h * heads * (nope + rope)
        attn = q + h * (kv_rank + rope) + kv_rank * heads * (nope + v_dim) + heads * v_dim * h
    else:
        attn = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2
    bias = 0
    if cfg.get("attention_bias") or model_type.startswith("qwen2"):
        bias += heads * head_dim + 2 * kv_heads * head_dim

    mats = 2 if model_type in _UNGATED_MLP else 3
    experts = _int(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0)
    dense_mlp = mats * h * inter
    if experts:
        moe_inter = _int(cfg, "moe_intermediate_size", default=inter)
        shared = _int(cfg, "n_shared_experts", default=0) * mats * h * moe_inter
        shared += mats * h * _int(cfg, "shared_expert_intermediate_size", default=0)
        moe_mlp = experts * mats * h * moe_inter + shared
        router = h * experts
        dense_layers = min(_int(cfg, "first_k_dense_replace", default=0), layers)
        linear = layers * attn + dense_layers * dense_mlp + (layers - dense_layers) * moe_mlp
        other = (layers - dense_layers) * router
    else:
        linear = layers * (attn + dense_mlp)
        other = 0
    other += layers * (2 * h + bias) + h
    tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    return ParamCount(embedding=vocab * h, lm_head=0 if tied else vocab * h, linear=linear, other=other)


def _parallel(flags: Mapping[str, Any]) -> tuple[int, int]:
    tp = _flag(flags, "tensor-parallel-size")
    pp = _flag(flags, "pipeline-parallel-size")
    return max(1, int(_num(tp, "tensor-parallel-size"))) if tp is not None else 1, (
        max(1, int(_num(pp, "pipeline-parallel-size"))) if pp is not None else 1
    )


def weights_per_gpu(
    p: ParamCount, dtype_bytes: float, linear_bytes: float | None, tp: int = 1, pp: int = 1
) -> float:
    """Bytes of weights on one GPU: linear layers at ``linear_bytes`` (``None``: the dtype), everything else
    at ``dtype_bytes``; tensor parallel divides; pipeline parallel splits the blocks and puts the larger of
    embeddings and ``lm_head`` on the busiest stage."""
    linear = p.linear * (linear_bytes if linear_bytes is not None else dtype_bytes)
    blocks = linear + p.other * dtype_bytes
    if pp > 1:
        return (blocks / pp + max(p.embedding, p.lm_head) * dtype_bytes) / tp
    return (blocks + (p.embedding + p.lm_head) * dtype_bytes) / tp


def weight_bytes(config: Mapping[str, Any], flags: Mapping[str, Any]) -> int:
    """Bytes of weights on one GPU (:func:`weights_per_gpu` for the flags' dtype, quantization and
    parallelism), minus ``--cpu-offload-gb``."""
    _, qbytes = _quantization(config, flags)
    tp, pp = _parallel(flags)
    per_gpu = weights_per_gpu(param_count(config), model_dtype_bytes(config, flags), qbytes, tp, pp)
    offload = _flag(flags, "cpu-offload-gb")
    if offload is not None:
        per_gpu -= _num(offload, "cpu-offload-gb") * GiB
    return max(0, int(per_gpu))


def kv_element_bytes(kv_cache_dtype: str | None, model_dtype_bytes: int) -> int:
    """Bytes of one KV-cache element: ``--kv-cache-dtype`` ``fp8*`` 1, a named dtype its size, ``auto`` (or
    none, or an unknown name) the model dtype's."""
    if kv_cache_dtype is None:
        return model_dtype_bytes
    name = kv_cache_dtype.lower()
    if name.startswith("fp8"):
        return 1
    return DTYPE_BYTES.get(name, model_dtype_bytes)


def kv_token_bytes(
    layers: int, kv_heads: int, head_dim: int, element_bytes: int, tp: int = 1, pp: int = 1
) -> int:
    """KV-cache bytes of one token on one GPU: 2 (K, V) x layers here x KV heads here x head_dim x bytes;
    pipeline parallel splits the layers, tensor parallel the KV heads (replicated when fewer than GPUs)."""
    heads_here = max(1, kv_heads // tp) if kv_heads >= tp else 1
    return 2 * math.ceil(layers / pp) * heads_here * head_dim * element_bytes


def kv_bytes_per_token(config: Mapping[str, Any], flags: Mapping[str, Any]) -> int:
    """KV-cache bytes for one token on one GPU: 2 x layers x kv_heads x head_dim x KV dtype bytes."""
    cfg = _text_config(config)
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _int(cfg, "num_attention_heads", "n_head", "num_heads")
    kv_heads = _int(cfg, "num_key_value_heads", "num_kv_heads", default=heads)
    head_dim = _int(cfg, "head_dim", default=_int(cfg, "hidden_size", "n_embd", "d_model") // heads)
    kv_dtype = _flag(flags, "kv-cache-dtype")
    b = kv_element_bytes(None if kv_dtype is None else str(kv_dtype), model_dtype_bytes(config, flags))
    tp, pp = _parallel(flags)
    if cfg.get("kv_lora_rank"):
        return math.ceil(layers / pp) * (_int(cfg, "kv_lora_rank") + _int(cfg, "qk_rope_head_dim")) * b
    return kv_token_bytes(layers, kv_heads, head_dim, b, tp, pp)


def max_model_len(config: Mapping[str, Any], flags: Mapping[str, Any]) -> int:
    """``--max-model-len``, else the config's length (its smallest length key, scaled by a RoPE factor)."""
    explicit = _flag(flags, "max-model-len")
    if explicit is not None:
        return int(_num(explicit, "max-model-len"))
    cfg = _text_config(config)
    lengths = [int(cfg[k]) for k in _LENGTH_KEYS if isinstance(cfg.get(k), int) and cfg[k] > 0]
    if not lengths:
        raise _Unknown("config.json has no max_position_embeddings and --max-model-len is not set")
    n = min(lengths)
    rope = cfg.get("rope_scaling")
    if isinstance(rope, Mapping):
        kind = str(rope.get("rope_type") or rope.get("type") or "").lower()
        factor = rope.get("factor")
        if kind in ("linear", "dynamic", "yarn") and isinstance(factor, int | float) and factor > 1:
            n = int(n * factor)
    return n


def reserve_bytes(config: Mapping[str, Any], flags: Mapping[str, Any]) -> int:
    """The activation / CUDA-graph reserve (see the module docstring for the constants)."""
    h = _int(_text_config(config), "hidden_size", "n_embd", "d_model")
    mbt = _flag(flags, "max-num-batched-tokens")
    tokens = int(_num(mbt, "max-num-batched-tokens")) if mbt is not None else DEFAULT_MAX_NUM_BATCHED_TOKENS
    return RESERVE_BASE_BYTES + tokens * h * RESERVE_BYTES_PER_BATCHED_TOKEN_PER_HIDDEN


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def gpu_memory_utilization(flags: Mapping[str, Any]) -> float | None:
    """The share of each GPU vLLM will claim: ``--gpu-memory-utilization``, else vLLM's default; None when
    the flag is not a number. vLLM refuses to start when a GPU's free memory is below it x the total."""
    raw = _flag(flags, "gpu-memory-utilization")
    try:
        return _num(raw, "gpu-memory-utilization") if raw is not None else DEFAULT_GPU_MEMORY_UTILIZATION
    except _Unknown:
        return None


def check_fits(config_json: Mapping[str, Any], flags: Mapping[str, Any], gpu_memory_bytes: int) -> FitVerdict:
    """Predict whether ``flags`` fit on a GPU of ``gpu_memory_bytes`` (each GPU, when tensor parallel).

    ``config_json`` is the model's parsed ``config.json``; ``flags`` the trial's effective vLLM flags.
    ``fits`` is False when weights + reserve + one max-length sequence's KV cache exceed
    ``gpu-memory-utilization x gpu_memory_bytes``; the reason then reads like vLLM's own error. Never raises:
    a config or flag the estimate cannot read gives ``fits=True, known=False`` with the reason.
    """
    gmu_raw = _flag(flags, "gpu-memory-utilization")
    try:
        gmu = (
            _num(gmu_raw, "gpu-memory-utilization") if gmu_raw is not None else DEFAULT_GPU_MEMORY_UTILIZATION
        )
        have = int(gmu * gpu_memory_bytes)
    except (_Unknown, ValueError, TypeError, OverflowError) as e:
        return FitVerdict(True, 0, 0, None, f"cannot estimate: {e}", known=False)
    try:
        weights = weight_bytes(config_json, flags)
        reserve = reserve_bytes(config_json, flags)
        per_token = kv_bytes_per_token(config_json, flags)
        length = max_model_len(config_json, flags)
        block_raw = _flag(flags, "block-size")
        block = int(_num(block_raw, "block-size")) if block_raw is not None else DEFAULT_BLOCK_SIZE
        block = max(1, block)
    except (_Unknown, ValueError, TypeError, ArithmeticError, AttributeError) as e:
        return FitVerdict(True, 0, have, None, f"cannot estimate: {e}", known=False)
    one_seq = math.ceil(length / block) * block * per_token
    need = weights + reserve + one_seq
    room = have - weights - reserve
    tokens = (room // (per_token * block)) * block if room > 0 and per_token > 0 else 0
    parts = (
        f"weights {_gib(weights)} + reserve {_gib(reserve)} + KV for one {length}-token sequence "
        f"{_gib(one_seq)} = {_gib(need)}"
    )
    budget = f"{gmu:g} x {_gib(gpu_memory_bytes)} = {_gib(have)}"
    fits = need <= have
    if fits:
        reason = f"fits: {parts} <= {budget}; KV room {_gib(room)} (~{tokens:,} tokens)"
    elif room <= 0:
        reason = f"predicted oom: no memory for the KV cache (room {_gib(room)}): {parts} > {budget}"
    else:
        reason = (
            f"predicted oom: the KV room {_gib(room)} holds {tokens:,} tokens, fewer than max-model-len "
            f"{length}: {parts} > {budget}"
        )
    return FitVerdict(
        fits=fits,
        need_bytes=need,
        have_bytes=have,
        kv_tokens_estimate=tokens,
        reason=reason,
        known=True,
        weights_bytes=weights,
        reserve_bytes=reserve,
        kv_bytes_per_token=per_token,
        kv_room_bytes=room,
        max_model_len=length,
    )
