"""A model's shape, read from its ``config.json``: what the simulator needs to count bytes and FLOPs.

:func:`load_shape` accepts a local folder holding ``config.json`` or one of a few well-known hub names
(``meta-llama/Llama-3.1-8B-Instruct``, ``Qwen/Qwen2.5-7B-Instruct-AWQ`` ...) whose shapes are built in, since
no hub is reachable from where the simulator runs. Dense decoder-only transformers (Llama, Mistral, Qwen2
and alike) are modelled exactly; mixture-of-experts configs (``num_local_experts``/``num_experts`` with
``num_experts_per_tok``) count every expert's weights in memory and the routed experts in FLOPs.

Contract: a :class:`ModelShape` is immutable; its parameter count (``params``, what the weights' bytes are
computed from) is tuner's memory model's, :func:`tuner.measure.memory.param_count`, so the simulator and
tuner's predictive memory check size weights and KV cache by the same code; the FLOP counts here
(``active_linear_params``, ``lm_head_params``) follow the same config fields; :func:`load_shape` raises :class:`ShapeError` with one line when the folder has
no readable ``config.json`` and the name is not built in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.measure.memory import ParamCount, kv_token_bytes, param_count


class ShapeError(ValueError):
    """The model's shape cannot be determined."""


@dataclass(frozen=True)
class QuantConfig:
    """A checkpoint's own quantization (``quantization_config`` in config.json)."""

    method: str  # awq | gptq | fp8 | compressed-tensors ...
    bits: int
    group_size: int = 128


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    params: ParamCount  # tuner.measure.memory.param_count of the config: what the weights' bytes count
    tie_word_embeddings: bool = False
    torch_dtype: str = "bfloat16"
    quant: QuantConfig | None = None
    num_experts: int = 0  # 0: dense
    experts_per_token: int = 0
    architecture: str = "LlamaForCausalLM"

    # ---- parameter counts -------------------------------------------------------------------------
    @property
    def attn_params_per_layer(self) -> int:
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return self.hidden_size * (q + 2 * kv) + q * self.hidden_size

    @property
    def mlp_params_per_expert(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def active_linear_params(self) -> int:
        """Linear weights one token passes through (routed experts only for MoE)."""
        experts = self.experts_per_token if self.num_experts else 1
        router = self.hidden_size * self.num_experts
        return self.num_layers * (self.attn_params_per_layer + experts * self.mlp_params_per_expert + router)

    @property
    def lm_head_params(self) -> int:
        """Parameters of the output projection (its FLOPs; stored separately unless tied)."""
        return self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        return self.params.total

    def kv_bytes_per_token(self, kv_dtype_bytes: int, tp: int = 1) -> int:
        """K and V of one token across all layers on one GPU (:func:`tuner.measure.memory.kv_token_bytes`)."""
        return kv_token_bytes(self.num_layers, self.num_kv_heads, self.head_dim, kv_dtype_bytes, tp)


def shape_from_config(cfg: dict[str, Any], name: str = "model") -> ModelShape:
    """Build a shape from a parsed ``config.json`` (multimodal configs: their ``text_config``)."""
    if "text_config" in cfg and "hidden_size" not in cfg:
        inner = dict(cfg["text_config"])
        inner.setdefault("torch_dtype", cfg.get("torch_dtype"))
        inner.setdefault("quantization_config", cfg.get("quantization_config"))
        cfg = inner
    try:
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        vocab = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ShapeError(f"{name}: config.json lacks {e} (not a decoder-only transformer config?)") from None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg.get("intermediate_size") or cfg.get("moe_intermediate_size") or 4 * hidden)
    max_pos = int(
        cfg.get("max_position_embeddings") or cfg.get("max_seq_len") or cfg.get("n_positions") or 2048
    )
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    per_tok = int(cfg.get("num_experts_per_tok") or (2 if experts else 0))
    if experts and cfg.get("moe_intermediate_size"):
        inter = int(cfg["moe_intermediate_size"])
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").removeprefix("torch.")
    quant = None
    qc = cfg.get("quantization_config")
    if isinstance(qc, dict) and qc.get("quant_method"):
        method = str(qc["quant_method"]).lower()
        bits = int(qc.get("bits") or qc.get("w_bit") or (8 if "fp8" in method else 4))
        group = int(qc.get("group_size") or qc.get("q_group_size") or 128)
        if method == "compressed-tensors":
            method = "fp8" if "fp8" in json.dumps(qc).lower() else "gptq"
        quant = QuantConfig(method=method, bits=bits, group_size=group if group > 0 else 128)
    archs = cfg.get("architectures") or ["LlamaForCausalLM"]
    try:
        params = param_count(cfg)
    except ValueError as e:
        raise ShapeError(f"{name}: {e}") from None
    return ModelShape(
        name=name,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        params=params,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        torch_dtype=dtype,
        quant=quant,
        num_experts=experts,
        experts_per_token=per_tok,
        architecture=str(archs[0]),
    )


def _llama(
    name: str, hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, ctx: int
) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": ctx,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
        "_name": name,
    }


_AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}

#: shapes of a few public checkpoints (their config.json figures), keyed by lower-case repo name
BUILTIN: dict[str, dict[str, Any]] = {
    "meta-llama/llama-3.1-8b-instruct": _llama("Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256, 131072),
    "meta-llama/llama-3.1-8b": _llama("Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256, 131072),
    "meta-llama/llama-3.1-70b-instruct": _llama("Llama-3.1-70B", 8192, 28672, 80, 64, 8, 128256, 131072),
    "mistralai/mistral-7b-instruct-v0.3": _llama("Mistral-7B-v0.3", 4096, 14336, 32, 32, 8, 32768, 32768),
    "qwen/qwen2.5-7b-instruct": {
        **_llama("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, 32768),
        "architectures": ["Qwen2ForCausalLM"],
    },
    "qwen/qwen2.5-7b-instruct-awq": {
        **_llama("Qwen2.5-7B-AWQ", 3584, 18944, 28, 28, 4, 152064, 32768),
        "architectures": ["Qwen2ForCausalLM"],
        "torch_dtype": "float16",
        "quantization_config": _AWQ,
    },
    "hugging-quants/meta-llama-3.1-8b-instruct-awq-int4": {
        **_llama("Llama-3.1-8B-AWQ", 4096, 14336, 32, 32, 8, 128256, 131072),
        "torch_dtype": "float16",
        "quantization_config": _AWQ,
    },
}


def load_shape(model: str) -> ModelShape:
    """The shape of ``model``: a folder with ``config.json``, or a built-in hub name (case-insensitive)."""
    p = Path(model).expanduser()
    cfg_path = p / "config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ShapeError(f"{cfg_path}: cannot read: {e}") from None
        if not isinstance(cfg, dict):
            raise ShapeError(f"{cfg_path}: not a JSON object")
        return shape_from_config(cfg, name=p.name)
    key = model.lower().rstrip("/")
    if key in BUILTIN:
        cfg = dict(BUILTIN[key])
        return shape_from_config(cfg, name=str(cfg.pop("_name", model)))
    if p.exists():
        raise ShapeError(f"{model}: no config.json in this folder")
    raise ShapeError(
        f"{model}: not a local model folder and not a built-in shape (built in: {', '.join(sorted(BUILTIN))})"
    )
