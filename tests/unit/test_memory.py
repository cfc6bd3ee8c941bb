"""The predictive memory check, against the figures vLLM 0.26.0 logged on the H200 (../shared/calibration)."""

from __future__ import annotations

from typing import Any

import pytest

from tuner.measure.memory import (
    GiB,
    check_fits,
    kv_bytes_per_token,
    max_model_len,
    model_dtype_bytes,
    param_count,
    weight_bytes,
)

#: the random-weight Llama-3.1-8B shape served on the H200
LLAMA_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_scaling": {"factor": 8.0, "rope_type": "llama3", "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
LLAMA_70B = {
    **LLAMA_8B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
}
#: what NVML reports for the H200 there: 143771 MiB
H200 = 143771 * 1024 * 1024
KV_TOKEN_BYTES = 131072  # 2 x 32 x 8 x 128 x 2


def gib(n: float) -> float:
    return n / GiB


def test_parameter_counts_match_published_sizes() -> None:
    assert param_count(LLAMA_8B).total == pytest.approx(8.03e9, rel=0.001)
    assert param_count(LLAMA_70B).total == pytest.approx(70.55e9, rel=0.001)
    llama_1b = {
        **LLAMA_8B,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "head_dim": 64,
        "tie_word_embeddings": True,
    }
    assert param_count(llama_1b).total == pytest.approx(1.236e9, rel=0.001)
    assert param_count(llama_1b).lm_head == 0
    mixtral = {**LLAMA_8B, "model_type": "mixtral", "vocab_size": 32000, "num_local_experts": 8}
    assert param_count(mixtral).total == pytest.approx(46.70e9, rel=0.001)
    qwen = {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
    }
    assert param_count(qwen).total == pytest.approx(7.616e9, rel=0.001)


def test_h200_weights_and_kv_per_token() -> None:
    assert gib(weight_bytes(LLAMA_8B, {})) == pytest.approx(15.0, rel=0.01)  # "Model loading took 15.0 GiB"
    assert kv_bytes_per_token(LLAMA_8B, {}) == KV_TOKEN_BYTES
    assert kv_bytes_per_token(LLAMA_8B, {"kv-cache-dtype": "fp8"}) == KV_TOKEN_BYTES // 2
    assert max_model_len(LLAMA_8B, {}) == 131072  # llama3 RoPE: max_position_embeddings already scaled


@pytest.mark.parametrize(
    ("flags", "kv_tokens_logged"),
    [
        ({}, 921_696),
        ({"gpu-memory-utilization": 0.5, "max-num-batched-tokens": 2048}, 439_584),
        ({"quantization": "fp8"}, 972_752),
        ({"block-size": 32}, 919_808),
        ({"max-num-seqs": 32}, 919_824),
    ],
)
def test_h200_kv_capacity_within_a_few_percent(flags: dict[str, Any], kv_tokens_logged: int) -> None:
    v = check_fits(LLAMA_8B, flags, H200)
    assert v.fits and v.known
    assert v.kv_tokens_estimate == pytest.approx(kv_tokens_logged, rel=0.02)
    assert v.kv_tokens_estimate is not None and v.kv_tokens_estimate % flags.get("block-size", 16) == 0


def test_h200_default_available_kv_memory() -> None:
    v = check_fits(LLAMA_8B, {}, H200)
    assert gib(v.kv_room_bytes) == pytest.approx(112.51, rel=0.01)  # "Available KV cache memory: 112.51 GiB"
    assert gib(v.have_bytes) == pytest.approx(0.92 * 143771 / 1024, rel=1e-6)
    assert "fits" in v.reason


def test_h200_gmu_005_is_predicted_oom() -> None:
    v = check_fits(LLAMA_8B, {"gpu-memory-utilization": 0.05}, H200)
    assert not v.fits and v.known
    assert gib(v.kv_room_bytes) == pytest.approx(-9.11, rel=0.08)  # "Available KV cache memory: -9.11 GiB"
    assert v.kv_tokens_estimate == 0
    assert v.reason.startswith("predicted oom: no memory for the KV cache")
    assert v.need_bytes > v.have_bytes
    assert v.to_dict()["fits"] is False


def test_room_for_weights_but_not_one_max_length_sequence() -> None:
    # 0.13 x 140.4 GiB = 18.3 GiB: weights and reserve fit, 16 GiB for one 131072-token sequence does not
    v = check_fits(LLAMA_8B, {"gpu-memory-utilization": 0.13}, H200)
    assert not v.fits and 0 < v.kv_room_bytes < 16 * GiB
    assert "fewer than max-model-len 131072" in v.reason
    # the same memory with a shorter max-model-len fits
    short = check_fits(LLAMA_8B, {"gpu-memory-utilization": 0.13, "max-model-len": 8192}, H200)
    assert short.fits and short.max_model_len == 8192


def test_max_model_len_is_rounded_up_to_a_block() -> None:
    a = check_fits(LLAMA_8B, {"max-model-len": 1000, "block-size": 32}, H200)
    b = check_fits(LLAMA_8B, {"max-model-len": 1024, "block-size": 32}, H200)
    assert a.need_bytes == b.need_bytes


def test_tensor_parallel_divides_weights_and_kv() -> None:
    one = check_fits(LLAMA_70B, {}, H200)
    assert not one.fits  # 131 GiB of bf16 weights do not fit in 0.92 x 140 GiB with any KV
    assert gib(weight_bytes(LLAMA_70B, {})) == pytest.approx(131.4, rel=0.01)
    tp2 = {"tensor-parallel-size": 2}
    assert weight_bytes(LLAMA_70B, tp2) == pytest.approx(weight_bytes(LLAMA_70B, {}) / 2, rel=0.001)
    assert kv_bytes_per_token(LLAMA_70B, tp2) == kv_bytes_per_token(LLAMA_70B, {}) // 2
    assert check_fits(LLAMA_70B, tp2, H200).fits
    # more GPUs than KV heads: each GPU keeps one (replicated) KV head
    assert kv_bytes_per_token(LLAMA_70B, {"tensor-parallel-size": 8}) == 2 * 80 * 1 * 128 * 2
    assert kv_bytes_per_token(LLAMA_70B, {"tensor-parallel-size": 16}) == 2 * 80 * 1 * 128 * 2
    # pipeline parallel splits the layers
    pp2 = {"pipeline-parallel-size": 2}
    assert kv_bytes_per_token(LLAMA_70B, pp2) == kv_bytes_per_token(LLAMA_70B, {}) // 2
    assert weight_bytes(LLAMA_70B, pp2) < 0.55 * weight_bytes(LLAMA_70B, {})


def test_quantized_checkpoints_and_flags() -> None:
    bf16 = weight_bytes(LLAMA_8B, {})
    fp8 = weight_bytes(LLAMA_8B, {"quantization": "fp8"})
    # linear layers at 1 byte, embeddings and lm_head (1.05 B params) stay bf16
    assert gib(fp8) == pytest.approx(8.46, rel=0.01)
    awq_cfg = {
        **LLAMA_8B,
        "torch_dtype": "float16",
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128},
    }
    awq = weight_bytes(awq_cfg, {})
    assert gib(awq) == pytest.approx(5.43, rel=0.02)  # 6.98 B linear x 0.52 byte + 1.05 B x 2 bytes
    assert awq == weight_bytes(awq_cfg, {"quantization": "awq_marlin"})
    gptq = weight_bytes({**LLAMA_8B, "quantization_config": {"quant_method": "gptq", "bits": 8}}, {})
    assert fp8 < gptq < bf16
    fp8_ckpt = {**LLAMA_8B, "quantization_config": {"quant_method": "fp8"}}
    assert weight_bytes(fp8_ckpt, {}) == fp8
    assert weight_bytes(LLAMA_8B, {"quantization": "none"}) == bf16
    ct = {
        **LLAMA_8B,
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int", "group_size": 128}}},
        },
    }
    assert weight_bytes(ct, {}) == awq
    ct8 = {
        **LLAMA_8B,
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}},
        },
    }
    assert weight_bytes(ct8, {}) == fp8


def test_dtypes() -> None:
    assert model_dtype_bytes(LLAMA_8B, {}) == 2
    assert model_dtype_bytes({**LLAMA_8B, "torch_dtype": "float32"}, {}) == 2  # auto serves fp32 in 16 bits
    assert model_dtype_bytes(LLAMA_8B, {"dtype": "float32"}) == 4
    assert model_dtype_bytes(LLAMA_8B, {"dtype": "auto"}) == 2
    assert kv_bytes_per_token(LLAMA_8B, {"dtype": "float32"}) == 2 * KV_TOKEN_BYTES


def test_flag_spellings_and_text_values() -> None:
    a = check_fits(LLAMA_8B, {"max_model_len": "32k", "gpu_memory_utilization": "0.5"}, H200)
    assert a.max_model_len == 32000 and gib(a.have_bytes) == pytest.approx(70.2, rel=0.01)
    assert check_fits(LLAMA_8B, {"max-model-len": "32K"}, H200).max_model_len == 32768
    assert check_fits(LLAMA_8B, {"cpu-offload-gb": 10}, H200).weights_bytes == pytest.approx(
        weight_bytes(LLAMA_8B, {}) - 10 * GiB, abs=1
    )


def test_max_model_len_from_config() -> None:
    qwen_yarn = {
        **LLAMA_8B,
        "max_position_embeddings": 32768,
        "rope_scaling": {"type": "yarn", "factor": 4.0},
    }
    assert max_model_len(qwen_yarn, {}) == 131072
    assert max_model_len({**LLAMA_8B, "seq_length": 4096}, {}) == 4096  # the smallest length key
    nested = {"model_type": "llava", "text_config": LLAMA_8B}
    assert (
        check_fits(nested, {}, H200).kv_tokens_estimate == check_fits(LLAMA_8B, {}, H200).kv_tokens_estimate
    )


def test_mla_kv_cache() -> None:
    ds = {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "num_hidden_layers": 61,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "vocab_size": 129280,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "first_k_dense_replace": 3,
        "kv_lora_rank": 512,
        "q_lora_rank": 1536,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "max_position_embeddings": 163840,
    }
    assert kv_bytes_per_token(ds, {}) == 61 * (512 + 64) * 2
    assert param_count(ds).total == pytest.approx(671e9, rel=0.01)


@pytest.mark.parametrize(
    ("config", "flags"),
    [
        ({}, {}),
        ({"hidden_size": 4096}, {}),
        ({**LLAMA_8B, "max_position_embeddings": None}, {}),
        (LLAMA_8B, {"max-model-len": "lots"}),
        (LLAMA_8B, {"gpu-memory-utilization": "half"}),
        (LLAMA_8B, {"block-size": True}),
    ],
)
def test_unknown_is_permissive_and_never_raises(config: dict[str, Any], flags: dict[str, Any]) -> None:
    v = check_fits(config, flags, H200)
    assert v.fits and not v.known and v.kv_tokens_estimate is None
    assert v.reason.startswith("cannot estimate")


def test_the_h200_study_file_straddles_the_memory_limit() -> None:
    """studies/h200-llama8b.yaml says its lowest gpu-memory-utilization is refused before launch."""
    from pathlib import Path

    from tuner.config.spec import FloatRange, load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "h200-llama8b.yaml")
    gmu = spec.search["gpu-memory-utilization"]
    assert isinstance(gmu, FloatRange)
    assert not check_fits(LLAMA_8B, {"gpu-memory-utilization": gmu.low}, H200).fits
    assert check_fits(LLAMA_8B, {"gpu-memory-utilization": gmu.low + (gmu.step or 0.05)}, H200).fits
    worst = {"gpu-memory-utilization": gmu.high, "max-num-batched-tokens": 16384, "quantization": "fp8"}
    assert check_fits(LLAMA_8B, worst, H200).fits
