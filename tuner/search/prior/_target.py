"""A study as the simulator runs it, and one configuration's prediction under it.

Contract:

* :func:`sim_target` — the study run on the simulator (:mod:`tuner.sim`): the model's shape (its
  ``config.json`` or a built-in name), the hardware profile (``prior.hardware``; else the server's
  ``--sim-hardware`` when the study runs against the simulator; else the GPU NVML names, with NVML's memory
  size; else, with no NVIDIA GPU, the CPU build's profile, :data:`CPU_PROFILE`), the workload's mean token
  lengths, the SLO and the capacity rule. A study the simulator cannot model raises
  :class:`PriorUnavailable` with one line.
* :func:`predict_for` — one configuration's prediction (:class:`tuner.sim.predict.Prediction`'s stored form)
  under that target; the same rule (:func:`tuner.sim.predict.predict`) the warm start ranks by.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner.config.argv import trial_flags
from tuner.config.paths import study_dir
from tuner.config.spec import FlagValue, StudySpec
from tuner.config.workload import CapacitySpec
from tuner.measure.telemetry.nvml import static_facts
from tuner.sim.args import build_parser, config_from_flags
from tuner.sim.engine import SimConfig, SimWorkload
from tuner.sim.hardware import Hardware, MiB, get_hardware, hardware_for_gpu
from tuner.sim.model_shape import ShapeError, load_shape
from tuner.sim.predict import Prediction, predict

#: the profile used on a host without an NVIDIA GPU (vLLM's CPU build)
CPU_PROFILE = "cpu-2core"


class PriorUnavailable(Exception):
    """The simulator cannot model this study; the message is one line for the user."""


@dataclass(frozen=True)
class SimTarget:
    """A study as the simulator runs it. ``time_scale``: wall seconds per simulated second of a study that
    measures the simulator itself (``--sim-time-scale``); predictions are given in the study's clock."""

    spec: StudySpec
    hardware: Hardware
    workload: SimWorkload
    slo: dict[str, float]
    capacity: CapacitySpec
    time_scale: float = 1.0

    def config(self, params: Mapping[str, FlagValue]) -> SimConfig | None:
        """One trial's params (Optuna's values or choice labels) as the simulator's configuration on this
        target's hardware; None for a value vLLM's parser refuses."""
        flags, model = trial_flags(self.spec, params)
        known = _sim_flags()
        sim_flags = {k: v for k, v in flags.items() if k in known}
        try:
            cfg = config_from_flags(model, sim_flags, self.hardware.name)
        except SystemExit:  # a value vLLM's parser refuses
            return None
        return dataclasses.replace(cfg, hw=self.hardware)

    def predict(self, params: Mapping[str, FlagValue]) -> Prediction:
        """The prediction for one trial's params (Optuna's values or choice labels)."""
        cfg = self.config(params)
        if cfg is None:
            return Prediction(feasible=False, failure="invalid_config")
        s = self.time_scale
        slo = {k: v / s for k, v in self.slo.items()}
        p = predict(cfg, self.workload, slo, self.capacity)
        if s == 1.0:
            return p
        metrics = {k: (v / s if "throughput" in k else v * s) for k, v in p.metrics.items()}
        return dataclasses.replace(p, metrics=metrics)


@functools.cache
def _sim_flags() -> frozenset[str]:
    """The vLLM flags the simulator reads (its parser's long options, without tuner's ``sim-*`` ones)."""
    names = {o[2:] for a in build_parser()._actions for o in a.option_strings if o.startswith("--")}
    return frozenset(n for n in names if not n.startswith("sim-"))


def sim_target(spec: StudySpec, hardware: str | None = None) -> SimTarget:
    """The study on the simulator (module docstring); raises :class:`PriorUnavailable`."""
    w = spec.workload
    if w.input_tokens is None or w.output_tokens is None or w.dataset is not None or w.sessions is not None:
        raise PriorUnavailable("the simulator models token lengths, not datasets or sessions")
    _, model = trial_flags(spec, {})
    try:
        load_shape(model)
    except ShapeError as e:
        raise PriorUnavailable(f"the simulator does not know the model ({e})") from None
    base = study_dir(spec)
    tokens_in, tokens_out = (
        round(x if isinstance(x, int) else x.mean(base)) for x in (w.input_tokens, w.output_tokens)
    )
    cap = w.capacity
    if w.mode == "fixed":
        level = w.request_rate if w.request_rate is not None else w.concurrency
        cap = CapacitySpec(levels=[float(level or 1)], resolution=None, max_steps=1)
    sim_w = SimWorkload(
        input_tokens=max(1, tokens_in),
        output_tokens=max(1, tokens_out),
        requests=w.requests or 256,
        rate=w.request_rate,
        shared_prefix_tokens=w.shared_prefix_tokens,
        seed=w.seed,
    )
    hw, scale = _hardware(spec, hardware)
    return SimTarget(spec, hw, sim_w, spec.slo.limits(), cap, scale)


def _server_option(spec: StudySpec, name: str) -> str | None:
    """``--NAME VALUE`` / ``--NAME=VALUE`` of the server command, else ``server.args[NAME]``."""
    cmd = list(spec.server.command)
    for i, word in enumerate(cmd):
        if word == f"--{name}" and i + 1 < len(cmd):
            return cmd[i + 1]
        if word.startswith(f"--{name}="):
            return word.partition("=")[2]
    v = spec.server.args.get(name)
    return None if v is None else str(v)


def _hardware(spec: StudySpec, name: str | None) -> tuple[Hardware, float]:
    """The profile (module docstring) and the simulated world's time scale (1 for a real server)."""
    sim_hw = _server_option(spec, "sim-hardware")
    chosen = name or (spec.prior.hardware if spec.prior else None) or sim_hw
    scale = 1.0
    if sim_hw is not None:
        try:
            scale = float(_server_option(spec, "sim-time-scale") or 1.0)
        except ValueError:
            scale = 1.0
    if chosen is not None:
        try:
            return get_hardware(chosen), scale
        except KeyError as e:
            raise PriorUnavailable(str(e.args[0])) from None
    facts = static_facts()
    if facts is None:
        return get_hardware(CPU_PROFILE), scale
    gpu = str(facts.get("name"))
    hw = hardware_for_gpu(gpu)
    if hw is None:
        raise PriorUnavailable(f"the simulator has no profile for the GPU {gpu!r} (set prior.hardware)")
    total = facts.get("memory_total_mib")
    if isinstance(total, int) and abs(total * MiB - hw.memory_bytes) > 0.05 * hw.memory_bytes:
        hw = dataclasses.replace(hw, memory_bytes=total * MiB)  # another memory size of the same chip
    return hw, scale


def predict_for(spec: StudySpec, params: Mapping[str, FlagValue]) -> dict[str, Any]:
    """The simulator's prediction for ``params`` under ``spec`` (stored form); ``{}`` when the simulator
    cannot model the study."""
    try:
        return sim_target(spec).predict(params).to_dict()
    except PriorUnavailable:
        return {}
