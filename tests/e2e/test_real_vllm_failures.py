"""The real CPU build of vLLM fails fast on bad flags, and tuner names each failure right.

Each test starts ``python -m vllm.entrypoints.openai.api_server`` once; every one fails within ~10-40 s on two
cores. No healthy start here (see the healthy-start test elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CPU_GMU
from tuner.errors import ServerStartError
from tuner.server.ports import free_port
from tuner.server.process import VllmServer
from tuner.server.procs import process_group_members

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(400)]


def start_failure(vllm_command: list[str], model: Path, tmp_path: Path, *flags: str) -> ServerStartError:
    port = free_port()
    argv = [*vllm_command, "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--max-model-len", "2048", *flags]
    server = VllmServer(
        argv,
        port=port,
        log_path=tmp_path / "server.log",
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        startup_timeout_s=300,
        stop_timeout_s=15,
        runtime_dir=tmp_path / "run",
    )
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert server.pgid is not None and process_group_members(server.pgid) == []  # nothing left behind
    assert not list((tmp_path / "run").glob("*.json"))
    return info.value


def test_memory_fraction_too_high_is_oom(vllm_command: list[str], tiny_model: Path, tmp_path: Path) -> None:
    err = start_failure(vllm_command, tiny_model, tmp_path, "--gpu-memory-utilization", "0.99")
    assert err.failure == "oom", str(err)
    assert "less than desired CPU memory utilization" in str(err)


def test_unknown_flag_is_invalid_config(vllm_command: list[str], tiny_model: Path, tmp_path: Path) -> None:
    err = start_failure(
        vllm_command, tiny_model, tmp_path, "--gpu-memory-utilization", str(CPU_GMU), "--no-such-flag", "1"
    )
    assert err.failure == "invalid_config", str(err)
    assert "unrecognized arguments" in str(err) and "exit status 2" in str(err)


def test_batched_tokens_below_model_len_is_invalid_config(
    vllm_command: list[str], tiny_model: Path, tmp_path: Path
) -> None:
    err = start_failure(
        vllm_command,
        tiny_model,
        tmp_path,
        "--gpu-memory-utilization",
        str(CPU_GMU),
        "--max-num-batched-tokens",
        "512",
        "--no-enable-chunked-prefill",
    )
    assert err.failure == "invalid_config", str(err)
    assert "max_num_batched_tokens (512) is smaller than max_model_len (2048)" in str(err)
