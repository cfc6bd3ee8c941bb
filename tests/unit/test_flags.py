"""The server argv is a pure function of the params: a table of cases."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuner.config.argv import build_plan, flag_args, format_value, model_position, resolve_command
from tuner.config.spec import spec_from_dict

BASE = {
    "name": "t",
    "model": "org/model",
    "workload": {"input_tokens": 8, "output_tokens": 4, "requests": 4},
}


def spec(**over: object):  # type: ignore[no-untyped-def]
    return spec_from_dict({**BASE, **over})


@pytest.mark.parametrize(
    ("flags", "argv"),
    [
        ({}, []),
        ({"max-num-seqs": 64}, ["--max-num-seqs", "64"]),
        ({"gpu-memory-utilization": 0.1 + 0.2}, ["--gpu-memory-utilization", "0.3"]),
        ({"gpu-memory-utilization": 0.123456789}, ["--gpu-memory-utilization", "0.123457"]),
        ({"enable-prefix-caching": True}, ["--enable-prefix-caching"]),
        ({"enable-prefix-caching": False}, ["--no-enable-prefix-caching"]),
        ({"quantization": None}, []),
        ({"quantization": "none"}, []),
        ({"quantization": "fp8"}, ["--quantization", "fp8"]),
        ({"b": 1, "a": 2}, ["--a", "2", "--b", "1"]),  # sorted: stable argv
        ({"kv-cache-dtype": "fp8_e4m3"}, ["--kv-cache-dtype", "fp8_e4m3"]),
    ],
)
def test_flag_args(flags: dict[str, object], argv: list[str]) -> None:
    assert flag_args(flags) == argv  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "where"),
    [
        (["vllm", "serve"], "positional"),
        (["python3", "-m", "vllm.entrypoints.cli.main", "serve"], "positional"),
        (["python", "-m", "vllm.entrypoints.openai.api_server"], "flag"),
        (["python", "-m", "tuner.sim"], "flag"),
    ],
)
def test_model_position(command: list[str], where: str) -> None:
    assert model_position(command) == where


def test_python_means_this_interpreter() -> None:
    assert resolve_command(["python", "-m", "x"])[0] == sys.executable
    assert resolve_command(["vllm", "serve"]) == ["vllm", "serve"]


def test_argv_api_server() -> None:
    s = spec(server={"args": {"max-model-len": 2048}}, search={"max-num-seqs": {"low": 2, "high": 8}})
    plan = build_plan(s, {"max-num-seqs": 4}, port=8123)
    assert plan.argv[1:] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "org/model",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        "4",
    ]
    assert plan.flags == {"max-model-len": 2048, "max-num-seqs": 4}


def test_argv_vllm_serve_positional_and_checkpoint_choice() -> None:
    s = spec(
        server={"command": ["vllm", "serve"]},
        search={"quantization": {"choices": [None, "fp8", {"name": "awq", "model": "org/model-awq"}]}},
    )
    assert build_plan(s, {"quantization": "none"}, 1).argv == [
        "vllm", "serve", "org/model", "--host", "127.0.0.1", "--port", "1",
    ]  # fmt: skip
    assert build_plan(s, {"quantization": "fp8"}, 1).argv[-2:] == ["--quantization", "fp8"]
    awq = build_plan(s, {"quantization": "awq"}, 1)
    assert awq.argv[2] == "org/model-awq" and awq.argv[-2:] == ["--quantization", "awq"]
    assert awq.model == "org/model-awq"


def test_served_model_name_and_host() -> None:
    s = spec(served_model_name="llama", server={"host": "0.0.0.0"})
    argv = build_plan(s, {}, 9).argv
    assert argv[argv.index("--served-model-name") + 1] == "llama"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False))
def test_format_value_round_trips(x: float) -> None:
    assert abs(float(format_value(x)) - x) <= abs(x) * 1e-5


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        st.one_of(
            st.booleans(),
            st.integers(-(10**9), 10**9),
            st.floats(0.001, 1e6),
            st.sampled_from(["fp8", "none"]),
        ),
        max_size=8,
    )
)
def test_flag_args_properties(flags: dict[str, object]) -> None:
    argv = flag_args(flags)  # type: ignore[arg-type]
    names = [a for a in argv if a.startswith("--")]
    assert len(names) == len(set(names))  # each flag at most once
    assert all(isinstance(a, str) and a for a in argv)
    assert flag_args(dict(reversed(list(flags.items())))) == argv  # order-independent  # type: ignore[arg-type]
    for name, value in flags.items():
        if value is False:
            assert f"--no-{name}" in argv
        elif value == "none":
            assert f"--{name}" not in argv
        else:
            assert f"--{name}" in argv
