"""The simulator's engine: KV arithmetic, scheduling behaviour, failure texts, summaries."""

from __future__ import annotations

import itertools
import math

import pytest

from tuner.measure.metrics import Summary, summarize
from tuner.sim.__main__ import main as sim_main
from tuner.sim.args import config_from_flags, parse_args
from tuner.sim.engine import (
    Engine,
    KVCache,
    SimConfig,
    SimRequest,
    SimWorkload,
    StartupError,
    capacity,
    plan_engine,
    simulate,
    weighted_percentiles,
)
from tuner.sim.hardware import PROFILES, GiB, get_hardware
from tuner.sim.model_shape import load_shape

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def h100(**kw: object) -> SimConfig:
    kw.setdefault("max_model_len", 8192)
    return SimConfig(model=LLAMA, hardware="H100", **kw)  # type: ignore[arg-type]


# ---- shapes and KV-cache arithmetic -------------------------------------------------------------------


def test_llama_8b_shape_counts() -> None:
    s = load_shape(LLAMA)
    assert s.total_params == pytest.approx(8.03e9, rel=0.005)
    assert s.kv_bytes_per_token(2) == 2 * 32 * 8 * 128 * 2 == 131072


def test_kv_capacity_matches_the_h200_measurement() -> None:
    """vLLM 0.26 on the H200: 57,606 blocks of 16 at the defaults; 60,797 with fp8 weights."""
    p = plan_engine(SimConfig(model=LLAMA, hardware="H200"))
    assert p.weight_bytes / GiB == pytest.approx(15.0, abs=0.1)
    assert p.num_blocks == pytest.approx(57606, rel=0.005)
    assert p.kv_tokens == p.num_blocks * 16
    fp8 = plan_engine(SimConfig(model=LLAMA, hardware="H200", quantization="fp8"))
    assert fp8.num_blocks == pytest.approx(60797, rel=0.005)


def test_kv_capacity_formula() -> None:
    p = plan_engine(h100(gpu_memory_utilization=0.5, block_size=32))
    hw = get_hardware("H100")
    expected = 0.5 * hw.memory_bytes - p.weight_bytes - p.activation_bytes - hw.reserve_bytes
    assert p.kv_cache_bytes == pytest.approx(expected)
    assert p.num_blocks == int(expected // (32 * 131072))
    tp2 = plan_engine(h100(gpu_memory_utilization=0.5, block_size=32, tensor_parallel_size=2))
    assert tp2.weight_bytes == pytest.approx(p.weight_bytes / 2)
    assert tp2.num_blocks > 2 * p.num_blocks  # half the weights and half the KV bytes per token per GPU


def test_partly_filled_last_block_is_held_whole() -> None:
    p = plan_engine(h100(block_size=16))
    eng = Engine(p)
    eng.add(SimRequest(rid=0, arrival=0.0, prompt_len=17, max_tokens=5))
    eng.advance()  # the prefill: 17 tokens -> 2 blocks
    assert eng.kv.used == 2
    while not eng.idle():
        eng.advance()
    assert eng.kv.used == 0
    assert eng.finished[0].n_out == 5


def test_kv_cache_lru_and_sharing() -> None:
    kv = KVCache(4)
    kv.allocate(2)
    assert kv.register("a") and not kv.register("a")
    kv.unref("a")  # free but hit-able
    assert kv.free == 3 and kv.ref["a"] == 0
    kv.touch("a")
    assert kv.free == 2 and kv.ref["a"] == 1
    kv.unref("a")
    kv.allocate(3)  # blank blocks go first, then the cached one is evicted
    assert "a" not in kv.ref and kv.free == 0


def test_weighted_percentiles_match_numpy() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    v = rng.random(50)
    w = rng.integers(1, 5, size=50)
    expanded = np.repeat(v, w)
    assert weighted_percentiles(v, w.astype(float), (50, 90, 99)) == pytest.approx(
        list(np.percentile(expanded, (50, 90, 99)))
    )


# ---- scheduling behaviour -------------------------------------------------------------------------------


def test_more_seqs_more_throughput_until_kv_bound() -> None:
    w = SimWorkload(input_tokens=512, output_tokens=256, requests=400, concurrency=256)
    thr = [simulate(h100(max_num_seqs=n), w).summary.output_throughput_tok_s for n in (8, 16, 32, 64, 128)]
    assert all(b > a * 1.05 for a, b in itertools.pairwise(thr)), thr
    # a KV cache that holds about 24 such requests: past that, more seqs buy (almost) nothing
    small = dict(gpu_memory_utilization=0.24, max_model_len=4096)
    p = plan_engine(h100(max_num_seqs=8, **small))
    assert 15 < p.kv_tokens / 768 < 40
    kv_bound = [simulate(h100(max_num_seqs=n, **small), w) for n in (32, 64, 128)]
    t = [r.summary.output_throughput_tok_s for r in kv_bound]
    assert max(t) < 1.1 * min(t), t
    assert kv_bound[-1].stats.kv_usage_max > 0.9


def test_preemption_when_kv_is_short() -> None:
    cfg = SimConfig(model=LLAMA, hardware="L4", quantization="fp8", max_num_seqs=128, max_model_len=4096)
    w = SimWorkload(input_tokens=1000, output_tokens=500, requests=150, concurrency=128)
    res = simulate(cfg, w)
    assert res.stats.preemptions > 0
    assert res.summary.completed == 150
    assert res.summary.generated_tokens_total == 150 * 500
    roomy = simulate(SimConfig(model=LLAMA, hardware="H100", max_num_seqs=128, max_model_len=4096), w)
    assert roomy.stats.preemptions == 0


def test_prefix_caching_helps_shared_prefixes() -> None:
    w = SimWorkload(
        input_tokens=2048, output_tokens=64, shared_prefix_tokens=1536, requests=200, concurrency=32
    )
    on = simulate(h100(enable_prefix_caching=True), w)
    off = simulate(h100(enable_prefix_caching=False), w)
    assert on.stats.prefix_hits > 0.6 * on.stats.prefix_queries
    assert off.stats.prefix_hits == 0
    assert on.summary.output_throughput_tok_s > 1.3 * off.summary.output_throughput_tok_s
    assert on.summary.ttft_ms.p90 < off.summary.ttft_ms.p90
    unique = simulate(h100(enable_prefix_caching=True), w.with_(shared_prefix_tokens=0))
    assert unique.stats.prefix_hits == 0


def test_chunked_prefill_off_needs_room_for_whole_prompts() -> None:
    w = SimWorkload(input_tokens=3000, output_tokens=64, requests=64, concurrency=16)
    off = simulate(h100(enable_chunked_prefill=False, max_num_batched_tokens=8192), w)
    on = simulate(h100(enable_chunked_prefill=True, max_num_batched_tokens=1024), w)
    assert off.summary.completed == on.summary.completed == 64
    assert off.summary.itl_ms.p99 > on.summary.itl_ms.p99  # whole 3,000-token prefills stall decodes


def test_quantization_changes_weights_and_speed() -> None:
    base = plan_engine(h100())
    fp8 = plan_engine(h100(quantization="fp8"))
    awq = plan_engine(SimConfig(model="Qwen/Qwen2.5-7B-Instruct-AWQ", hardware="L4", max_model_len=4096))
    assert fp8.weight_bytes < 0.6 * base.weight_bytes
    assert 4.5 < awq.weight_bytes / GiB < 6.0 and awq.quant == "awq" and awq.dtype == "float16"
    w = SimWorkload(input_tokens=1024, output_tokens=128, requests=128, concurrency=64)
    assert (
        simulate(fp8, w).summary.output_throughput_tok_s > simulate(base, w).summary.output_throughput_tok_s
    )


def test_bulk_steps_match_step_by_step_and_records() -> None:
    """The bulk paths (decode-only runs; decodes beside a long chunked prefill) change nothing."""
    cases = (
        (
            h100(max_num_seqs=48, gpu_memory_utilization=0.3),
            SimWorkload(input_tokens=900, output_tokens=200, requests=120, concurrency=64),
        ),
        (
            h100(max_num_seqs=48, gpu_memory_utilization=0.3),
            SimWorkload(
                input_tokens=1500, output_tokens=80, requests=80, rate=25.0, shared_prefix_tokens=1000
            ),
        ),
        (
            h100(max_num_seqs=16, max_num_batched_tokens=512, gpu_memory_utilization=0.3),
            SimWorkload(
                input_tokens=5000, output_tokens=300, requests=40, concurrency=24, shared_prefix_tokens=3000
            ),
        ),
        (
            h100(max_num_seqs=16, max_num_batched_tokens=128),
            SimWorkload(input_tokens=6000, output_tokens=100, requests=20, rate=3.0),
        ),
    )
    for cfg, w in cases:
        fast = simulate(cfg, w, records=True)
        slow = simulate(cfg, w, bulk=False)
        ref = summarize(fast.records or [])
        for s in (slow.summary, ref):
            assert s.output_throughput_tok_s == pytest.approx(fast.summary.output_throughput_tok_s, rel=1e-9)
            assert s.ttft_ms.p99 == pytest.approx(fast.summary.ttft_ms.p99, rel=1e-9)
            assert s.itl_ms.p50 == pytest.approx(fast.summary.itl_ms.p50, rel=1e-9)
            assert s.itl_ms.p99 == pytest.approx(fast.summary.itl_ms.p99, rel=1e-9)
            assert s.tpot_ms.p90 == pytest.approx(fast.summary.tpot_ms.p90, rel=1e-9)
        assert fast.stats.steps == slow.stats.steps


def test_capacity_mode_scores_best_feasible_step() -> None:
    w = SimWorkload(input_tokens=512, output_tokens=128, requests=64)
    res = capacity(h100(max_num_seqs=64), w, {"itl_p99": 60.0, "ttft_p99": 2000.0})
    assert res.best is not None and res.throughput > 0
    _level, best = res.steps[res.best]
    assert best.itl_ms.p99 <= 60.0 and best.ttft_ms.p99 <= 2000.0
    assert res.steps[-1][0] <= 64
    tight = capacity(h100(max_num_seqs=64), w, {"itl_p99": 0.5})
    assert tight.best is None and tight.throughput == 0.0


def test_simulation_is_deterministic() -> None:
    w = SimWorkload(input_tokens=700, output_tokens=90, requests=60, rate=12.0, seed=3)
    a, b = simulate(h100(), w).summary, simulate(h100(), w).summary
    assert a.to_dict() == b.to_dict()


# ---- failures: where vLLM refuses to start --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "failure", "text"),
    [
        ({"gpu_memory_utilization": 0.05}, "oom", "No available memory for the cache blocks"),
        ({"block_size": 7}, "invalid_config", "No valid attention backend found"),
        (
            {"enable_chunked_prefill": False, "max_num_batched_tokens": 2048, "max_model_len": 8192},
            "invalid_config",
            "is smaller than max_model_len",
        ),
        (
            {"max_num_seqs": 512, "max_num_batched_tokens": 256},
            "invalid_config",
            "must be greater than or equal",
        ),
        ({"quantization": "awq"}, "invalid_config", "Cannot find the config file for awq"),
        ({"tensor_parallel_size": 3}, "invalid_config", "must be divisible by tensor parallel size"),
        (
            {"gpu_memory_utilization": 0.14, "max_model_len": 131072},
            "oom",
            "larger than the available KV cache memory",
        ),
        ({"max_model_len": 10**6}, "invalid_config", "greater than the derived max_model_len"),
    ],
)
def test_startup_failures(kw: dict[str, object], failure: str, text: str) -> None:
    with pytest.raises(StartupError) as e:
        plan_engine(SimConfig(model=LLAMA, hardware="H200", **kw))  # type: ignore[arg-type]
    assert e.value.failure == failure
    assert any(text in line for line in e.value.lines)


def test_weights_that_do_not_fit_are_a_cuda_oom() -> None:
    with pytest.raises(StartupError) as e:
        plan_engine(SimConfig(model="meta-llama/Llama-3.1-70B-Instruct", hardware="H100"))
    assert e.value.failure == "oom" and "CUDA out of memory" in e.value.lines[0]
    assert plan_engine(
        SimConfig(model="meta-llama/Llama-3.1-70B-Instruct", hardware="H100", tensor_parallel_size=4)
    )


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(["--model", LLAMA, "--max-num-seqz", "4"])
    assert e.value.code == 2
    assert "unrecognized arguments: --max-num-seqz" in capsys.readouterr().err
    rc = sim_main(["--model", LLAMA, "--gpu-memory-utilization", "0.05", "--sim-startup-s", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "No available memory for the cache blocks" in err
    rc = sim_main(["--model", LLAMA, "--block-size", "7", "--sim-startup-s", "0"])
    assert rc == 1 and "No valid attention backend" in capsys.readouterr().err
    rc = sim_main(
        [
            LLAMA,
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            "2048",
            "--max_model_len",
            "8k",
            "--sim-startup-s",
            "0",
        ]
    )
    assert rc == 1 and "ValidationError" in capsys.readouterr().err


def test_flags_mapping_goes_through_the_cli_parser() -> None:
    cfg = config_from_flags(
        LLAMA, {"max-num-seqs": 64, "enable-prefix-caching": False, "quantization": "fp8"}, "L40S"
    )
    assert (cfg.max_num_seqs, cfg.enable_prefix_caching, cfg.quantization, cfg.hardware) == (
        64,
        False,
        "fp8",
        "L40S",
    )


def test_every_profile_plans_an_8b_or_7b_awq_model() -> None:
    for name, hw in PROFILES.items():
        if hw.is_cpu:
            continue
        model = LLAMA if hw.memory_bytes > 30 * GiB else "Qwen/Qwen2.5-7B-Instruct-AWQ"
        quant = None
        if name == "T4":
            model, quant = "Qwen/Qwen2.5-7B-Instruct-AWQ", None
        p = plan_engine(SimConfig(model=model, hardware=name, max_model_len=4096, quantization=quant))
        assert p.num_blocks > 0 and math.isfinite(p.step_time(512, 8, 1e5, 4096))


def test_capacity_runs_tuners_rule() -> None:
    """The simulator's capacity mode is tuner's: its levels (ladder and refinement), requests per step, stop
    rule and scored step."""
    from tuner.config.workload import CapacitySpec
    from tuner.measure import capacity as rule

    w = SimWorkload(input_tokens=512, output_tokens=128, requests=64)
    slo = {"itl_p99": 60.0, "ttft_p99": 2000.0}
    cap = CapacitySpec(max_level=64)
    res = capacity(h100(max_num_seqs=64), w, slo, cap)
    done: list[tuple[float, Summary]] = []
    for lv, s in res.steps:  # every level is the one the rule asks for next
        assert rule.next_level(cap, False, slo, 0.05, done) == lv
        done.append((lv, s))
    assert isinstance(rule.next_level(cap, False, slo, 0.05, done), str)  # and it stopped where the rule says
    assert len(done) > len([lv for lv in rule.levels(cap) if lv <= max(lv for lv, _ in done)])  # refined
    steps = [s for _, s in done]
    assert res.scored == rule.conclude(cap, False, slo, 0.05, done, None).scored
    first = simulate(
        h100(max_num_seqs=64), w.with_(concurrency=1, requests=rule.step_requests(1, 64, cap, False, slo))
    )
    assert steps[0].output_throughput_tok_s == first.summary.output_throughput_tok_s


def test_memory_is_tuners_model() -> None:
    """Weights and KV bytes per token of a plan are tuner's predictive memory check's figures."""
    from tuner.measure import memory
    from tuner.sim.model_shape import BUILTIN

    cfg = {k: v for k, v in BUILTIN["meta-llama/llama-3.1-8b-instruct"].items() if k != "_name"}
    for flags, sim_kw in (
        ({}, {}),
        ({"kv-cache-dtype": "fp8"}, {"kv_cache_dtype": "fp8"}),
        ({"quantization": "fp8"}, {"quantization": "fp8"}),
        ({"tensor-parallel-size": 2}, {"tensor_parallel_size": 2}),
    ):
        plan = plan_engine(
            SimConfig(model="meta-llama/Llama-3.1-8B-Instruct", hardware="H100", max_model_len=8192, **sim_kw)
        )
        assert plan.weight_bytes == pytest.approx(memory.weight_bytes(cfg, flags), abs=1)
        assert plan.kv_bytes_per_token == memory.kv_bytes_per_token(cfg, flags)


def test_a_prefill_ending_on_its_last_token_still_stamps_the_first_token() -> None:
    """A chunk that leaves exactly one prompt token makes the request look like a decode; the bulk decode
    path must not take it before its first token is stamped (TTFT would be missing)."""
    cfg = SimConfig(model="meta-llama/llama-3.1-8b-instruct", hardware="H200", max_num_batched_tokens=1024)
    res = simulate(cfg, SimWorkload(input_tokens=1024, output_tokens=64, requests=16, concurrency=2))
    assert res.summary.ttft_ms.count == 16 and math.isfinite(res.summary.ttft_ms.p99)
