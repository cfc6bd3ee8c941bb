"""Command-line flags of ``python -m tuner.sim``: vLLM's own names, plus ``--sim-*`` flags.

Contract:

* :func:`parse_args` returns a namespace or exits like vLLM's argparse does: status 2 and
  ``<prog>: error: unrecognized arguments: ...`` (or ``invalid choice`` / ``expected one argument``).
* Option names may use ``_`` or ``-`` (``--max_num_seqs`` == ``--max-num-seqs``), as vLLM accepts.
* The model is ``--model M`` or a positional ``M`` (optionally after the word ``serve``).
* :func:`config_from_args` turns the namespace into a :class:`tuner.sim.engine.SimConfig`.
* :func:`config_from_flags` does the same from tuner's flag mapping (``{"max-num-seqs": 64, ...}``),
  through the very same parser, so the benchmark and a server given the same flags agree.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from tuner.sim.engine import DTYPES, KV_DTYPES, QUANT_METHODS, SimConfig

PROG = "api_server.py"


def _human_int(text: str) -> int:
    """``4096``, ``4k``, ``32K``, ``1m`` (vLLM accepts these for lengths)."""
    t = text.strip().lower()
    mult = 1
    if t.endswith("k"):
        mult, t = 1024, t[:-1]
    elif t.endswith("m"):
        mult, t = 1024 * 1024, t[:-1]
    try:
        return int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The parser (vLLM's flag names; defaults ``None`` mean "vLLM's default for the hardware")."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="A simulated vLLM OpenAI-compatible server (tuner.sim).",
        allow_abbrev=False,
    )
    p.add_argument("model_tag", nargs="*", help="the model (as `vllm serve MODEL`); `serve` may precede it")
    p.add_argument("--model", default=None, help="model folder with config.json, or a built-in hub name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=_human_int, default=None)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--max-model-len", type=_human_int, default=None)
    p.add_argument("--quantization", "-q", choices=[*QUANT_METHODS, "None"], default=None)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--dtype", choices=list(DTYPES), default="auto")
    p.add_argument("--kv-cache-dtype", choices=list(KV_DTYPES), default="auto")
    p.add_argument("--seed", type=int, default=0)
    # accepted for compatibility, no effect on the simulation
    for flag in ("--trust-remote-code", "--disable-log-requests", "--disable-log-stats", "--enforce-eager"):
        p.add_argument(flag, action="store_true")
    for flag in (
        "--load-format",
        "--download-dir",
        "--uvicorn-log-level",
        "--api-key",
        "--generation-config",
    ):
        p.add_argument(flag, default=None)
    sim = p.add_argument_group("simulator")
    sim.add_argument(
        "--sim-hardware", default="H200", help="hardware profile (H200, H100, A100-80GB, L40S, ...)"
    )
    sim.add_argument(
        "--sim-time-scale",
        type=float,
        default=1.0,
        help="wall seconds per simulated second (0.01: a 20 ms step lasts 0.2 ms of wall time)",
    )
    sim.add_argument(
        "--sim-startup-s", type=float, default=0.5, help="wall seconds before /health answers 200"
    )
    sim.add_argument(
        "--sim-eos-prob",
        type=float,
        default=0.0,
        help="per-token chance of an end-of-sequence for requests without ignore_eos",
    )
    return p


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``--max_num_seqs=8`` -> ``--max-num-seqs=8`` (vLLM's parser accepts underscores)."""
    out = []
    for a in argv:
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            a = name.replace("_", "-") + eq + value
        out.append(a)
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse or exit with status 2 (argparse's message on stderr)."""
    ns = build_parser().parse_args(normalize_argv(argv))
    tags = [t for t in ns.model_tag if t != "serve"] if ns.model_tag else []
    if len(tags) > 1:
        build_parser().error(f"unrecognized arguments: {' '.join(tags[1:])}")
    if tags and ns.model is None:
        ns.model = tags[0]
    if ns.model is None:
        build_parser().error("the following arguments are required: --model (or a positional MODEL)")
    return ns


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    """The engine configuration the parsed flags describe."""
    quant = ns.quantization if ns.quantization not in (None, "None") else None
    return SimConfig(
        model=ns.model,
        hardware=ns.sim_hardware,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        block_size=ns.block_size,
        max_model_len=ns.max_model_len,
        enable_prefix_caching=ns.enable_prefix_caching,
        enable_chunked_prefill=ns.enable_chunked_prefill,
        quantization=quant,
        tensor_parallel_size=ns.tensor_parallel_size,
        dtype=ns.dtype,
        kv_cache_dtype=ns.kv_cache_dtype,
        served_model_name=(ns.served_model_name or [None])[0],
    )


def config_from_flags(
    model: str, flags: Mapping[str, bool | int | float | str | None], hardware: str = "H200"
) -> SimConfig:
    """``{"max-num-seqs": 64, "enable-prefix-caching": False}`` -> :class:`SimConfig`, via the CLI parser
    (``None`` leaves vLLM's default, ``False`` passes ``--no-FLAG``). Raises ``SystemExit(2)`` like the CLI
    on unknown flags or bad values."""
    from tuner.config.argv import flag_args

    argv = ["--model", model, "--sim-hardware", hardware, *flag_args(flags)]
    return config_from_args(parse_args(argv))
