"""The simulator's view of a study: a warm start for the real search, and a prediction beside every trial.

Contract:

* :func:`sim_target` — the study run on the simulator (:mod:`tuner.sim`): the model's shape (its
  ``config.json`` or a built-in name), the hardware profile (``prior.hardware``; else the server's
  ``--sim-hardware`` when the study runs against the simulator; else the GPU NVML names, with NVML's memory
  size; else, with no NVIDIA GPU, the CPU build's profile), the workload's mean token lengths, the SLO and
  the capacity rule. A study the simulator cannot model raises :class:`PriorUnavailable` with one line.
* :func:`predict_for` — one configuration's prediction (:class:`tuner.sim.predict.Prediction`'s stored form)
  under that target; the same rule (:func:`tuner.sim.predict.predict`) the warm start ranks by.
* :func:`simulated_study` — ``n_trials`` trials of tuner's sampler over the search space against any
  prediction function (in memory, nothing stored; one simulation per distinct configuration), and
  :func:`top_distinct`: the best distinct feasible configurations by the study's first objective, never
  one of ``exclude``.
* :func:`warm_start` — with ``prior.sim``, at a study's creation, queue :func:`top_distinct` of
  :func:`simulated_study` after the baseline, each carrying its prediction (``ATTR_PREDICTION``) and rank
  (``ATTR_WARM_START``); never a configuration already in the study. Returns the lines to show: what was
  queued, or why nothing was (the study then starts the usual way).
* :func:`store_prediction` / :func:`stored_prediction` — write and read a trial's prediction.

Simulated trials are never told to the real study: only the queued configurations reach it, so TPE learns
from real measurements alone (docs/warmstart.md says why).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from tuner.config.argv import trial_flags
from tuner.config.paths import study_dir
from tuner.config.space import distributions, suggest_from
from tuner.config.spec import FlagValue, StudySpec
from tuner.config.workload import CapacitySpec
from tuner.measure.telemetry.nvml import static_facts
from tuner.search.record import ATTR_PREDICTION, ATTR_RUN_PARAMS, ATTR_WARM_START, read
from tuner.search.samplers import make_sampler
from tuner.sim.args import build_parser, config_from_flags
from tuner.sim.engine import SimWorkload
from tuner.sim.hardware import Hardware, MiB, get_hardware, hardware_for_gpu
from tuner.sim.model_shape import ShapeError, load_shape
from tuner.sim.predict import PREDICTED_METRICS, Prediction, predict

Params = dict[str, Any]
#: constraint value of a configuration the simulator says would not start
FAILED_VIOLATION = 10.0
#: predictions within this fraction of each other are a tie for :func:`top_distinct`
TIE = 0.01
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

    def predict(self, params: Mapping[str, FlagValue]) -> Prediction:
        """The prediction for one trial's params (Optuna's values or choice labels)."""
        flags, model = trial_flags(self.spec, params)
        known = _sim_flags()
        sim_flags = {k: v for k, v in flags.items() if k in known}
        try:
            cfg = config_from_flags(model, sim_flags, self.hardware.name)
        except SystemExit:  # a value vLLM's parser refuses
            return Prediction(feasible=False, failure="invalid_config")
        s = self.time_scale
        slo = {k: v / s for k, v in self.slo.items()}
        p = predict(dataclasses.replace(cfg, hw=self.hardware), self.workload, slo, self.capacity)
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


# ---- the simulated study ------------------------------------------------------------------------------


def _key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


def simulated_study(
    space: Mapping[str, BaseDistribution],
    evaluate: Callable[[Params], Prediction],
    *,
    metric: str,
    direction: str,
    slo: Mapping[str, float],
    n_trials: int,
    seed: int | None,
    sampler: str = "tpe",
) -> list[tuple[Params, Prediction]]:
    """``n_trials`` trials of tuner's ``sampler`` over ``space``, scored by ``evaluate``'s ``metric`` with
    the SLO as constraints (as a real study tells them); every trial's params and prediction, in order."""
    cache: dict[tuple[tuple[str, Any], ...], Prediction] = {}
    out: list[tuple[Params, Prediction]] = []
    worst = 0.0 if direction == "maximize" else 1e12

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest_from(trial, name, d) for name, d in space.items()}
        key = _key(params)
        if key not in cache:
            cache[key] = evaluate(params)
        p = cache[key]
        out.append((params, p))
        for k, limit in slo.items():
            v = p.metrics.get(k)
            c = (
                FAILED_VIOLATION
                if v is None or not math.isfinite(v)
                else min(v / limit - 1, FAILED_VIOLATION)
            )
            trial.set_constraint(k, c)
        trial.set_constraint("failed", 0.0 if p.failure is None else 1.0)
        value = p.metrics.get(metric)
        return worst if value is None or not math.isfinite(value) or p.failure else value

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_sampler(sampler, seed=seed, n_objectives=1, constraints_func=None, search_space=dict(space))
        study = optuna.create_study(direction=optuna.study.StudyDirection[direction.upper()], sampler=s)
        try:
            study.optimize(objective, n_trials=n_trials)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return out


def top_distinct(
    results: Sequence[tuple[Params, Prediction]],
    top: int,
    *,
    metric: str,
    direction: str,
    exclude: Sequence[Mapping[str, Any]] = (),
    tie: float = TIE,
) -> list[tuple[Params, Prediction]]:
    """The ``top`` best feasible configurations of ``results`` by ``metric``, each once, none of ``exclude``.
    Greedy, best first; among those predicted within ``tie`` (relative) of the best left, the one differing
    from the picks so far in the most flags (configurations the simulator cannot tell apart may differ on
    the GPU, so the picks spread over them)."""
    seen = {_key(p) for p in exclude}
    sign = -1.0 if direction == "maximize" else 1.0
    left: dict[tuple[tuple[str, Any], ...], tuple[Params, Prediction]] = {}
    for params, r in sorted(results, key=lambda pr: sign * pr[1].metrics.get(metric, 0.0)):
        key = _key(params)
        if r.feasible and metric in r.metrics and key not in seen and key not in left:
            left[key] = (params, r)
    out: list[tuple[Params, Prediction]] = []
    while left and len(out) < top:
        lead = next(iter(left.values()))[1].metrics[metric]
        near = [k for k, (_, r) in left.items() if abs(r.metrics[metric] - lead) <= tie * abs(lead)]
        key = max(near, key=lambda k: min((_differ(left[k][0], p) for p, _ in out), default=0))
        out.append(left.pop(key))
    return out


def _differ(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b))


def warm_start(study: optuna.Study, spec: StudySpec) -> list[str]:
    """Queue the simulator's best distinct configurations (module docstring); the lines to show."""
    prior = spec.prior
    if prior is None or not prior.sim:
        return []
    try:
        target = sim_target(spec)
    except PriorUnavailable as e:
        return [f"warm start skipped: {e}; the study starts the usual way"]
    if not spec.search:
        return []
    t0 = time.monotonic()
    metric, direction = spec.metric_names[0], spec.direction_names[0]
    results = simulated_study(
        distributions(spec),
        target.predict,
        metric=metric,
        direction=direction,
        slo=spec.slo.limits(),
        n_trials=prior.trials,
        seed=spec.seed,
        sampler=spec.sampler,
    )
    taken = [_params_of(t) for t in study.get_trials(deepcopy=False)]
    best = top_distinct(results, prior.top, metric=metric, direction=direction, exclude=taken)
    for rank, (params, p) in enumerate(best, start=1):
        attrs = {ATTR_PREDICTION: p.to_dict(), ATTR_WARM_START: rank}
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    took = time.monotonic() - t0
    where = f"{target.hardware.name} profile, {prior.trials} simulated trials, {took:.0f} s"
    if not best:
        return [f"warm start: the simulator ({where}) found no configuration meeting the SLO; none queued"]
    lead = best[0][1].metrics[metric]
    return [
        f"warm start: the simulator ({where}) queued {len(best)} configuration(s) after the baseline; "
        f"predicted best {metric} {lead:,.4g}"
    ]


def _params_of(t: FrozenTrial) -> dict[str, Any]:
    """A trial's params, a queued one's included (Optuna keeps those as its ``fixed_params``)."""
    fixed = t.system_attrs.get("fixed_params")
    return {**(fixed if isinstance(fixed, dict) else {}), **t.params}


# ---- per-trial predictions -------------------------------------------------------------------------------


def store_prediction(trial: optuna.Trial, spec: StudySpec) -> None:
    """Store the simulator's prediction for what ``trial`` ran (its run params, else its params) when the
    study asks for predictions (``prior.predict``), the simulator can model it, and the trial carries none
    yet (a warm-start one does)."""
    if spec.prior is None or not spec.prior.predict or trial.user_attrs.get(ATTR_PREDICTION):
        return
    run = trial.user_attrs.get(ATTR_RUN_PARAMS)
    try:
        pred = predict_for(spec, run if isinstance(run, Mapping) else trial.params)
    except Exception:  # a prediction is an extra: it must never cost the trial's measurement
        return
    if pred:
        trial.set_user_attr(ATTR_PREDICTION, pred)


def stored_prediction(t: FrozenTrial) -> Prediction | None:
    """The prediction stored with ``t``, or None."""
    d = t.user_attrs.get(ATTR_PREDICTION)
    return Prediction.from_dict(d) if isinstance(d, Mapping) and d else None


def warm_start_rank(t: FrozenTrial) -> int | None:
    """1 for the simulator's best configuration queued by the warm start, 2 for the next...; None otherwise."""
    r = t.user_attrs.get(ATTR_WARM_START)
    return r if isinstance(r, int) and not isinstance(r, bool) else None


def prediction_errors(predicted: Prediction, measured: Mapping[str, float]) -> dict[str, float]:
    """Relative error of each predicted metric that was measured: ``predicted / measured - 1`` (so +0.2:
    the simulator said 20 % more). Metrics missing or zero on either side are left out."""
    out: dict[str, float] = {}
    for k, m in measured.items():
        p = predicted.metrics.get(k)
        if p is not None and m and math.isfinite(m) and math.isfinite(p):
            out[k] = p / m - 1.0
    return out


def measured_metrics(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """A stored scored summary (:meth:`tuner.measure.metrics.Summary.to_dict`) by the names predictions use
    (``output_throughput``, ``ttft_p99`` ...); what it lacks is left out."""
    if not summary:
        return {}
    simple = {
        "output_throughput": "output_throughput_tok_s",
        "total_throughput": "total_throughput_tok_s",
        "request_throughput": "request_throughput_rps",
    }
    out: dict[str, float] = {}
    for name in PREDICTED_METRICS:
        if name in simple:
            v = summary.get(simple[name])
        else:
            base, _, pct = name.rpartition("_")
            dist = summary.get(f"{base}_ms")
            v = dist.get(pct) if isinstance(dist, Mapping) else None
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)
    return out


def trial_errors(t: FrozenTrial) -> dict[str, float]:
    """Predicted vs measured for one finished trial (:func:`prediction_errors`); ``{}`` without a prediction
    or a measurement."""
    pred = stored_prediction(t)
    rec = read(t)
    if pred is None or rec.failed or rec.result is None:
        return {}
    return prediction_errors(pred, measured_metrics(rec.result.metrics))
