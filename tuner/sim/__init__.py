"""A calibrated simulator of a vLLM server (``python -m tuner.sim``) and its engine, callable in-process.

Public API::

    from tuner.sim import SimConfig, SimWorkload, simulate, capacity, plan_engine, StartupError
    res = simulate(SimConfig(model="meta-llama/Llama-3.1-8B-Instruct", hardware="H100", max_num_seqs=64),
                   SimWorkload(input_tokens=1024, output_tokens=256, requests=300))
    res.summary.output_throughput_tok_s, res.summary.itl_ms.p50, res.stats.preemptions

* :mod:`tuner.sim.engine` — the discrete-event model of vLLM's scheduler, KV cache and step time;
* :mod:`tuner.sim.hardware` — GPU/CPU profiles (datasheet figures) and the fitted efficiency constants;
* :mod:`tuner.sim.model_shape` — a model's shape from ``config.json`` (bytes by tuner's memory model);
* :mod:`tuner.sim.args` — vLLM's flag names -> :class:`SimConfig`;
* :mod:`tuner.sim.server` — the OpenAI-compatible HTTP face (the engine on the wall clock, the routes), with
  :mod:`tuner.sim.openai_api` (response shapes), :mod:`tuner.sim.prometheus` (``/metrics``) and
  :mod:`tuner.sim.codec` (tokenisation).
"""

from tuner.sim.engine import (
    CapacityResult,
    Engine,
    Plan,
    SimConfig,
    SimResult,
    SimWorkload,
    StartupError,
    capacity,
    plan_engine,
    simulate,
)
from tuner.sim.hardware import PROFILES, Efficiency, Hardware, get_hardware
from tuner.sim.model_shape import ModelShape, load_shape

__all__ = [
    "PROFILES",
    "CapacityResult",
    "Efficiency",
    "Engine",
    "Hardware",
    "ModelShape",
    "Plan",
    "SimConfig",
    "SimResult",
    "SimWorkload",
    "StartupError",
    "capacity",
    "get_hardware",
    "load_shape",
    "plan_engine",
    "simulate",
]
