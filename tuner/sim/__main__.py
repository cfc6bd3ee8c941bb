"""``python -m tuner.sim --model DIR_OR_NAME [vLLM flags] [--sim-* flags]``: a simulated vLLM server.

Exit status as vLLM's: 2 for flags argparse rejects (``unrecognized arguments``), 1 for a configuration
vLLM refuses at start-up (its error text on stderr, after ``--sim-startup-s``), 0 after SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from tuner.sim.args import build_parser, config_from_args, parse_args
from tuner.sim.engine import StartupError, plan_engine
from tuner.sim.hardware import get_hardware
from tuner.sim.model_shape import ShapeError


def _log(level: str, where: str, msg: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    stream = sys.stderr if level in ("ERROR", "WARNING") else sys.stdout
    print(f"{level} {stamp} [{where}] {msg}", file=stream, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, plan, wait ``--sim-startup-s``, then serve until interrupted. Returns the exit status."""
    ns = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        hw = get_hardware(ns.sim_hardware)
    except KeyError as e:
        build_parser().error(f"argument --sim-hardware: {e.args[0]}")
    if ns.sim_time_scale <= 0:
        build_parser().error("argument --sim-time-scale: must be positive")
    cfg = config_from_args(ns)
    _log("INFO", "api_server.py", f"vLLM API server (tuner.sim) on simulated {hw.description}")
    _log("INFO", "api_server.py", f"args: {vars(ns)}")
    try:
        plan = plan_engine(cfg)
    except ShapeError as e:
        time.sleep(ns.sim_startup_s)
        print(f"OSError: {e}", file=sys.stderr, flush=True)
        return 1
    except StartupError as e:
        time.sleep(ns.sim_startup_s)
        _log("ERROR", "core.py", "EngineCore failed to start.")
        for line in e.lines:
            print(line, file=sys.stderr, flush=True)
        return 1
    d = plan.describe()
    _log("INFO", "gpu_model_runner.py", f"Model loading took {d['weights_gib']:.4f} GiB")
    _log("INFO", "gpu_worker.py", f"Available KV cache memory: {d['kv_cache_gib']:.2f} GiB")
    _log("INFO", "kv_cache_utils.py", f"GPU KV cache size: {plan.kv_tokens:,} tokens")
    _log(
        "INFO",
        "kv_cache_utils.py",
        f"Maximum concurrency for {plan.max_model_len:,} tokens per request: {plan.kv_tokens / plan.max_model_len:.2f}x",
    )
    _log("INFO", "sim", f"resolved: {d}")

    from aiohttp import web

    from tuner.sim.codec import Codec
    from tuner.sim.server import SimServer

    codec = Codec(ns.model, ns.tokenizer, vocab_size=plan.shape.vocab_size, seed=ns.seed)
    _log("INFO", "sim", f"tokenizer: {codec.kind}")
    time.sleep(ns.sim_startup_s)
    server = SimServer(
        plan,
        codec,
        served_model_name=cfg.served_model_name or ns.model,
        model_path=ns.model,
        time_scale=ns.sim_time_scale,
        eos_prob=ns.sim_eos_prob,
        seed=ns.seed,
    )
    _log("INFO", "launcher.py", f"Starting vLLM API server on http://{ns.host}:{ns.port}")
    try:
        web.run_app(server.app(), host=ns.host, port=ns.port, print=None, access_log=None)
    except OSError as e:
        print(
            f"ERROR: [Errno {e.errno}] error while attempting to bind on address ('{ns.host}', {ns.port}): "
            f"{(e.strerror or str(e)).lower()}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
