"""Write a tiny random-weight Llama and its tokenizer to a folder, for tests and the demo.

No model hub is reachable from CI, so the project makes its own model. The folder holds what vLLM and
``transformers`` need to load offline: ``config.json``, ``generation_config.json``, ``model.safetensors``
(random float32 weights written with numpy, no torch needed) and a fast tokenizer (a WordLevel vocabulary of
synthetic words ``w3 w4 ...`` with Llama-style BOS/EOS and a chat template).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 4096
    max_position_embeddings: int = 4096


def write_tiny_model(out: str | Path, shape: TinyShape = TinyShape(), seed: int = 0) -> Path:
    """Write the model to ``out`` (created if needed) and return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_config(out, shape)
    _write_tokenizer(out, shape.vocab_size)
    _write_weights(out, shape, seed)
    return out


def _write_config(out: Path, s: TinyShape) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.num_hidden_layers,
        "num_attention_heads": s.num_attention_heads,
        "num_key_value_heads": s.num_key_value_heads,
        "head_dim": s.hidden_size // s.num_attention_heads,
        "vocab_size": s.vocab_size,
        "max_position_embeddings": s.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=2))


def _write_tokenizer(out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for i in range(len(specials), vocab_size):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


def _write_weights(out: Path, s: TinyShape, seed: int) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    head_dim = s.hidden_size // s.num_attention_heads
    kv = s.num_key_value_heads * head_dim

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": w(s.vocab_size, s.hidden_size),
        "model.norm.weight": np.ones(s.hidden_size, np.float32),
        "lm_head.weight": w(s.vocab_size, s.hidden_size),
    }
    for i in range(s.num_hidden_layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = w(s.hidden_size, s.hidden_size)
        t[p + "self_attn.k_proj.weight"] = w(kv, s.hidden_size)
        t[p + "self_attn.v_proj.weight"] = w(kv, s.hidden_size)
        t[p + "self_attn.o_proj.weight"] = w(s.hidden_size, s.hidden_size)
        t[p + "mlp.gate_proj.weight"] = w(s.intermediate_size, s.hidden_size)
        t[p + "mlp.up_proj.weight"] = w(s.intermediate_size, s.hidden_size)
        t[p + "mlp.down_proj.weight"] = w(s.hidden_size, s.intermediate_size)
        t[p + "input_layernorm.weight"] = np.ones(s.hidden_size, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(s.hidden_size, np.float32)
    save_file(t, str(out / "model.safetensors"), metadata={"format": "pt"})
