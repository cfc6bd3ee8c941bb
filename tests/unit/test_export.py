"""Export of a stored trial: a shell-quoted `vllm serve` line and a `vllm serve --config` YAML."""

from __future__ import annotations

import shlex
from typing import Any

import optuna
import pytest
import yaml

from tuner.errors import TunerError
from tuner.report.export import serve_args, to_command, to_yaml


def trial(argv: list[str], flags: dict[str, Any]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(values=[1.0], user_attrs={"argv": argv, "result": {"flags": flags}})


FLAGS = {
    "max-model-len": 2048,
    "max-num-seqs": 32,
    "gpu-memory-utilization": 0.30000000000000004,
    "enable-prefix-caching": False,
    "enable-chunked-prefill": True,
    "quantization": None,
    "kv-cache-dtype": "none",
}


def test_model_from_positional_serve_argv_and_no_host_port() -> None:
    argv = [
        "vllm",
        "serve",
        "/models/my model",
        "--host",
        "127.0.0.1",
        "--port",
        "41234",
        "--max-num-seqs",
        "32",
    ]
    model, flags = serve_args(trial(argv, FLAGS))
    assert model == "/models/my model"
    cmd = to_command(model, flags)
    words = shlex.split(cmd)
    assert words[:3] == ["vllm", "serve", "/models/my model"]
    assert "--host" not in words and "--port" not in words
    assert words[3:] == [
        "--enable-chunked-prefill",
        "--no-enable-prefix-caching",
        "--gpu-memory-utilization",
        "0.3",
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        "32",
    ]


def test_model_from_module_argv_keeps_checkpoint_and_served_name() -> None:
    argv = [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "org/ckpt-awq",
        "--served-model-name",
        "m",
    ]
    model, flags = serve_args(trial(argv, {"quantization": "awq"}))
    assert model == "org/ckpt-awq"
    assert flags == {"quantization": "awq", "served-model-name": "m"}
    assert to_command(model, flags) == "vllm serve org/ckpt-awq --quantization awq --served-model-name m"


def test_yaml_for_vllm_config() -> None:
    text = to_yaml("/models/tiny", FLAGS)
    data = yaml.safe_load(text)
    assert next(iter(data)) == "model"
    assert data == {
        "model": "/models/tiny",
        "enable-chunked-prefill": True,
        "enable-prefix-caching": False,
        "gpu-memory-utilization": 0.3,
        "max-model-len": 2048,
        "max-num-seqs": 32,
    }


def test_fallback_model_and_missing_everything() -> None:
    assert serve_args(trial([], {"max-num-seqs": 4}), default_model="/m")[0] == "/m"
    with pytest.raises(TunerError, match="no server command"):
        serve_args(trial([], {}))
