"""tuner.server.failures: exit status + log tail -> failure class and reason. Real texts from vLLM CPU 0.32 (this
repo's pinned build, captured by hand) and vLLM GPU builds (0.26 on an H200, PyTorch, uvicorn)."""

from __future__ import annotations

import pytest

from tuner.server.failures import (
    FAILURE_CLASSES,
    MAX_REASON_CHARS,
    PORT_IN_USE,
    RULES,
    classify_runtime_failure,
    classify_start_failure,
    clean_line,
    extract_reason,
    last_line,
)

W = "(VllmWorker-0 pid=6568) ERROR 11-23 20:48:43 [multiproc_executor.py:953] "
#: a traceback frame as vLLM's worker logs it (the root cause ends up 100+ lines above the end)
FRAMES = [
    W + '  File "/venv/lib/python3.11/site-packages/vllm/v1/worker/cpu_worker.py", line 83, in __init__',
    W + "    raise ValueError(",
    W + "           ^^^^^^^^^^^^^^^^^^^^^",
]
ENGINE_FAILED = [
    "Traceback (most recent call last):",
    '  File "/venv/lib/python3.11/site-packages/vllm/v1/engine/utils.py", line 1431, in wait_for_engine_startup',
    "    raise RuntimeError(",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
]

# --- real, vLLM CPU 0.32.0 (this machine) ---------------------------------------------------------------

CPU_OOM = [
    "(APIServer pid=6445) INFO 11-23 20:48:21 [api_utils.py:286] non-default args: {'gpu_memory_utilization': 0.99}",
    *FRAMES,
    W + "ValueError: Available memory on node 0 (6.85/9.96 GiB) on startup is less than desired CPU memory "
    "utilization (0.99, 9.86 GiB). On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction "
    "of CPU memory reserved (despite its name). To resolve: decrease `--gpu-memory-utilization` (e.g. "
    "`--gpu-memory-utilization 0.5`) or reduce CPU memory used by other processes.",
    "(EngineCore pid=6483) ERROR 11-23 20:48:45 [core.py:1510] EngineCore failed to start.",
    *(FRAMES * 40),
    *ENGINE_FAILED,
]
CPU_UNKNOWN_FLAG = [
    "usage: api_server.py [-h] [--headless] [--api-server-count API_SERVER_COUNT]",
    "                     [--enable-log-requests | --no-enable-log-requests]",
    "                     [model_tag]",
    "api_server.py: error: unrecognized arguments: --no-such-flag",
]
CPU_BATCHED_TOKENS = [
    '  File "/venv/lib/python3.11/site-packages/vllm/engine/arg_utils.py", line 2617, in create_engine_config',
    "    scheduler_config = SchedulerConfig(",
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for SchedulerConfig",
    "  Value error, max_num_batched_tokens (512) is smaller than max_model_len (2048). This effectively limits "
    "the maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. Please "
    "increase max_num_batched_tokens or decrease max_model_len. [type=value_error, input_value=ArgsKwargs((), "
    "{'runner_t..., 'stream_interval': 1}), input_type=ArgsKwargs]",
    "    For further information visit https://errors.pydantic.dev/2.14/v/value_error",
]
CPU_BLOCK_48 = [
    "(Worker pid=6944) ERROR 11-23 20:50:02 [multiproc_executor.py:1063]     raise ValueError(",
    "(Worker pid=6944) ERROR 11-23 20:50:02 [multiproc_executor.py:1063] ValueError: No common block size for 48 "
    "(CPU_ATTN: [MultipleOf(32)]).",
    "(EngineCore pid=6919) ERROR 11-23 20:50:02 [core.py:1510] RuntimeError: Worker failed with error 'No common "
    "block size for 48 (CPU_ATTN: [MultipleOf(32)]).', please check the stack trace above for the root cause",
    *ENGINE_FAILED,
]
CPU_PORT = [
    '  File "/venv/lib/python3.11/site-packages/vllm/entrypoints/launchers/launcher.py", line 348, in create_server_socket',
    "    sock.bind(addr)",
    "OSError: [Errno 98] Address already in use",
]
#: lines of a real healthy start that must not be mistaken for a failure
CPU_HEALTHY_NOISE = [
    "Triton is installed, but doesn't include CPU backend. Disabling Triton.",
    "/venv/lib/python3.11/site-packages/vllm/entrypoints/openai/api_server.py:24: DeprecationWarning: "
    "`vllm.entrypoints.openai.api_server` is deprecated and will likely beunsupported in a future version.",
    "(APIServer pid=3892) WARNING 11-23 20:45:47 [system_utils.py:255] Found ulimit of 20000 and failed to "
    "automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like "
    "`OSError: [Errno 24] Too many open files`. Consider increasing with ulimit -n",
    "(EngineCore pid=3964) INFO 11-23 20:45:56 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: "
    "model='models/tiny', dtype=torch.bfloat16, max_seq_len=2048, tensor_parallel_size=1, "
    "disable_custom_all_reduce=True, quantization=None, quantization_config=None, enforce_eager=False",
    "(Worker pid=3992) INFO 11-23 20:46:15 [cpu_worker.py:260] Auto set (0.66/9.46) GiB for KV cache on node 0, "
    "with 1.36 GiB requested memory for the worker. 0.71 GiB memory was consumed by non-kv usages.",
    "(Worker pid=3992) WARNING 11-23 20:46:05 [utils.py:333] Attempted to load weight lm_head.weight with dtype "
    "torch.float32 into parameter with dtype torch.bfloat16",
    "(APIServer pid=3892) INFO 11-23 20:46:20 [launcher.py:46] Route: /health, Methods: GET",
]

# --- GPU builds ---------------------------------------------------------------------------------------------

GPU_NO_CACHE = [
    "(EngineCore_DP0 pid=812) ERROR 10-02 09:14:11 [core.py:708] ValueError: No available memory for the cache "
    "blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
    *ENGINE_FAILED,
]
GPU_BACKEND = [
    "(EngineCore_DP0 pid=812) ERROR 10-02 09:20:40 [core.py:708] ValueError: No valid attention backend found for "
    "cuda with AttentionSelectorConfig(head_size=128, dtype=torch.bfloat16, kv_cache_dtype=auto, block_size=48). "
    "Reasons: {FLASH_ATTN: [block_size not supported], FLASHINFER: [block_size not supported]}.",
    *ENGINE_FAILED,
]
GPU_CUDA_OOM = [
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "139.81 GiB of which 1.05 GiB is free. Including non-PyTorch memory, this process has 138.7 GiB in use.",
    *ENGINE_FAILED,
]
GPU_KV_TOO_SMALL = [
    "ValueError: The model's max seq len (131072) is larger than the maximum number of tokens that can be "
    "stored in KV cache (45056). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
    "initializing the engine.",
    *ENGINE_FAILED,
]
GPU_KV_MEMORY = [
    "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is "
    "needed, which is larger than the available KV cache memory (5.50 GiB). Based on the available memory, the "
    "estimated maximum model length is 45056.",
]
GPU_FREE_MEMORY = [
    "ValueError: Free memory on device (10.5/139.8 GiB) on startup is less than desired GPU memory utilization "
    "(0.9, 125.8 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
]
GPU_FP8 = [
    "ValueError: The quantization method fp8 is not supported for the current GPU. Minimum capability: 89. "
    "Current capability: 80.",
]
UNKNOWN_QUANT = ["ValueError: Unknown quantization method: foo. Must be one of ['awq', 'fp8', 'gptq']."]
ARGPARSE_CHOICE = [
    "api_server.py: error: argument --quantization/-q: invalid choice: 'foo' (choose from 'awq', 'fp8')"
]
AWQ_DTYPE = [
    "ValueError: torch.bfloat16 is not supported for quantization method awq. Supported dtypes: [torch.float16]"
]
UVICORN_PORT = [
    "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use"
]
TP_HEADS = ["ValueError: Total number of attention heads (12) must be divisible by tensor parallel size (8)."]


CASES = [
    # name, returncode, tail, timed_out, class, reason contains
    (
        "cpu oom, root cause 120 lines up",
        1,
        CPU_OOM,
        False,
        "oom",
        "less than desired CPU memory utilization",
    ),
    (
        "cpu unknown flag",
        2,
        CPU_UNKNOWN_FLAG,
        False,
        "invalid_config",
        "unrecognized arguments: --no-such-flag",
    ),
    (
        "cpu batched < model len",
        1,
        CPU_BATCHED_TOKENS,
        False,
        "invalid_config",
        "max_num_batched_tokens (512)",
    ),
    (
        "cpu block size 48",
        1,
        CPU_BLOCK_48,
        False,
        "invalid_config",
        "ValueError: No common block size for 48",
    ),
    ("cpu port taken", 1, CPU_PORT, False, "port_in_use", "[Errno 98] Address already in use"),
    ("gpu no cache memory", 1, GPU_NO_CACHE, False, "oom", "No available memory for the cache blocks"),
    ("gpu no attention backend", 1, GPU_BACKEND, False, "invalid_config", "No valid attention backend"),
    ("gpu cuda oom", 1, GPU_CUDA_OOM, False, "oom", "CUDA out of memory"),
    ("gpu kv cache too small", 1, GPU_KV_TOO_SMALL, False, "oom", "maximum number of tokens"),
    ("gpu kv cache memory", 1, GPU_KV_MEMORY, False, "oom", "available KV cache memory"),
    ("gpu free memory check", 1, GPU_FREE_MEMORY, False, "oom", "less than desired GPU memory utilization"),
    ("fp8 on old gpu", 1, GPU_FP8, False, "invalid_config", "quantization method fp8 is not supported"),
    ("unknown quantization", 1, UNKNOWN_QUANT, False, "invalid_config", "Unknown quantization method"),
    ("argparse invalid choice", 2, ARGPARSE_CHOICE, False, "invalid_config", "invalid choice: 'foo'"),
    ("awq dtype", 1, AWQ_DTYPE, False, "invalid_config", "not supported for quantization"),
    ("uvicorn port", 1, UVICORN_PORT, False, "port_in_use", "address already in use"),
    ("generic ValueError at exit", 1, TP_HEADS, False, "invalid_config", "must be divisible"),
    ("healthy-looking log, deadline", None, CPU_HEALTHY_NOISE, True, "startup_timeout", "Route: /health"),
    (
        "hung after oom, deadline",
        None,
        [*CPU_HEALTHY_NOISE, *GPU_NO_CACHE],
        True,
        "oom",
        "No available memory",
    ),
    ("generic ValueError, deadline", None, TP_HEADS, True, "startup_timeout", "must be divisible"),
    ("healthy-looking log, exit 1", 1, CPU_HEALTHY_NOISE, False, "crashed", "Route: /health"),
    ("killed by signal, no log", -9, [], False, "crashed", "killed by SIGKILL"),
    ("segfault", -11, ["Segmentation fault (core dumped)"], False, "crashed", "Segmentation fault"),
    ("exit 2, nothing known", 2, ["something odd"], False, "invalid_config", "something odd"),
    ("engine failed, cause cut off", 1, ENGINE_FAILED, False, "crashed", "Engine core initialization failed"),
]


@pytest.mark.parametrize(
    ("name", "rc", "tail", "timed_out", "failure", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_classify_start_failure(
    name: str, rc: int | None, tail: list[str], timed_out: bool, failure: str, reason: str
) -> None:
    assert classify_start_failure(rc, tail, timed_out=timed_out) == failure
    got = last_line(tail) if failure == "startup_timeout" else extract_reason(tail, rc)
    assert reason in got


def test_reason_is_one_clean_line_without_prefixes() -> None:
    reason = extract_reason(CPU_OOM, 1)
    assert reason.startswith("ValueError: Available memory on node 0")
    assert "pid=" not in reason and "ERROR" not in reason and "\n" not in reason
    assert reason.endswith("reduce CPU memory used by other processes.")
    long = extract_reason(["ValueError: " + "x" * 5000])
    assert len(long) == MAX_REASON_CHARS and long.endswith("...")


def test_reason_drops_pydantic_type_suffix() -> None:
    reason = extract_reason(CPU_BATCHED_TOKENS, 1)
    assert reason.startswith(
        "Value error, max_num_batched_tokens (512) is smaller than max_model_len (2048)."
    )
    assert "[type=" not in reason


def test_reason_prefers_the_root_cause_over_wrappers() -> None:
    # the ValueError comes first; the RuntimeError lines repeat or hide it
    assert extract_reason(CPU_BLOCK_48).startswith("ValueError: No common block size")
    tail = ["RuntimeError: CUDA error: an illegal memory access was encountered", *ENGINE_FAILED, "  "]
    assert extract_reason(tail) == "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_reason_without_any_log() -> None:
    assert extract_reason([], 1) == "exited with status 1, no log output"
    assert extract_reason([], None) == "no log output"
    assert extract_reason(["", "   "], -15) == "killed by SIGTERM, no log output"
    assert last_line([]) == "no log output"


def test_clean_line_strips_ansi_and_vllm_prefixes() -> None:
    raw = "\x1b[1;31m(EngineCore_DP0 pid=812) ERROR 10-02 09:14:11.123 [core.py:708] ValueError: x\x1b[0m\r"
    assert clean_line(raw) == "ValueError: x"
    assert clean_line("  plain  ") == "plain"


def test_multi_line_entries_are_split() -> None:
    assert classify_start_failure(
        1, ["noise\nOSError: [Errno 98] Address already in use\n"], timed_out=False
    ) == ("port_in_use")


def test_runtime_failure_is_crashed_and_reason_names_the_cause() -> None:
    tail = ["INFO ... 200 OK", *GPU_CUDA_OOM]
    assert classify_runtime_failure(1, tail) == "crashed"
    assert classify_runtime_failure(None, []) == "crashed"
    assert "CUDA out of memory" in extract_reason(tail, 1)


def test_every_rule_names_a_known_class() -> None:
    known = {*FAILURE_CLASSES, PORT_IN_USE}
    assert {rule.failure for rule in RULES} <= known
    assert {c[4] for c in CASES} <= known
