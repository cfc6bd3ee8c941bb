"""Online calibration: a few groups of the simulator's efficiency constants refit to a study's own trials.

Contract:

* An :class:`Observation` is one measured trial as the simulator replays it: its configuration (a
  :class:`SimConfig`; its ``hw`` is replaced by each candidate), the workload of its *scored* step with the
  load fixed at the measured level (``concurrency`` or ``rate`` set, the step's request count) and the
  measured figures by :data:`tuner.sim.predict.PREDICTED_METRICS`' names, in the simulator's clock. Only
  :data:`FIT_METRICS` are fitted.
* :func:`refit` fits one multiplicative scale per group of :data:`GROUPS` on ``base.efficiency``: it
  minimises the weighted sum, over the latest ``max_obs`` observations, of squared log errors
  ``log(simulated / measured)`` plus ``prior_obs`` observations' worth of penalty pulling each log-scale
  to 0 (a few trials cannot drag the constants far; many can), each scale kept in ``bounds``. Each
  evaluation simulates every observation once at its fixed load (:func:`tuner.sim.engine.simulate`, not
  the capacity ladder); at most ``max_evals`` evaluations. The search is damped Gauss-Newton on the log
  scales (forward differences; a step is halved until the loss falls), deterministic, and its answer is the
  best point it evaluated, so the loss after is never above the loss before. The ``fp8`` group is fitted
  only when fp8 and non-fp8 observations both exist (else it cannot be told from ``device``).
  Observations the simulator would not start are left out; with none left the scales stay 1.
* :class:`Refit` is the result: scales, the refit :class:`Hardware` (:func:`tuner.sim.predict.perturbed`),
  the loss before and after, how many observations it used; :meth:`Refit.to_dict` is its stored form,
  :meth:`Refit.from_dict` reads it back onto a base profile, :func:`describe` is one line of a stored form.

Pure: no storage, no Optuna.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.sim.engine import SimConfig, SimWorkload, StartupError, plan_engine, simulate
from tuner.sim.hardware import Hardware
from tuner.sim.predict import perturbed

#: the efficiency constants each fitted scale multiplies. ``device``: the achieved fractions of the chip's
#: datasheet peaks (fp8 and 4-bit kernels are relative to ``gemm``, so they follow it); ``host``: the
#: per-step host costs; ``fp8``: fp8 kernels against bf16 ones
GROUPS: dict[str, tuple[str, ...]] = {
    "device": ("gemm", "attention", "memory"),
    "host": ("step_s", "per_seq_s", "mixed_step_s"),
    "fp8": ("fp8_gemm",),
}
#: fitted figures and their weights: the step's throughput (capacity; counted twice, as in
#: ``bench/calibrate.py``), the time to clear a wave of prefills (TTFT's tail: its median at a fixed
#: closed-loop load is set by the order requests are served in, which the simulator does not reproduce;
#: docs/warmstart.md) and a decode step (ITL's median)
FIT_METRICS: dict[str, float] = {"output_throughput": 2.0, "ttft_p99": 1.0, "itl_p50": 1.0}
BOUNDS = (0.5, 2.0)
#: the base constants weigh as much as this many observations
PRIOR_OBS = 2.0
MAX_OBS = 16
MAX_EVALS = 24
#: largest |log error| a single figure contributes (a simulation that produced nothing)
_CLIP = 5.0
_STEP = 0.05  # forward-difference step on a log-scale


@dataclass(frozen=True)
class Observation:
    """One measured trial as the simulator replays it (module docstring); ``label``: the trial's number."""

    config: SimConfig
    workload: SimWorkload
    measured: Mapping[str, float]
    label: int | None = None


@dataclass(frozen=True)
class Refit:
    """A refit (module docstring). ``scales``: group -> multiplier; ``hardware``: the base profile with
    them applied; ``n``: observations used; ``trials``: the labels of those it was given (the latest
    ``max_obs``; those the simulator would not start among them); ``evaluations`` and ``seconds``: its cost."""

    scales: dict[str, float]
    hardware: Hardware
    n: int
    loss_before: float
    loss_after: float
    evaluations: int = 0
    seconds: float = 0.0
    trials: tuple[int, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (JSON-safe)."""
        return {
            "hardware": self.hardware.name,
            "scales": dict(self.scales),
            "n": self.n,
            "trials": list(self.trials),
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: Hardware) -> Refit | None:
        """:meth:`to_dict`'s form applied to ``base``; None when malformed, made on another profile, or
        naming a group this version does not have."""
        scales = d.get("scales")
        if d.get("hardware") != base.name or not isinstance(scales, Mapping) or set(scales) - set(GROUPS):
            return None
        try:
            s = {str(k): float(v) for k, v in scales.items()}
            n = int(d.get("n") or 0)
            trials = tuple(int(x) for x in d.get("trials") or ())
            before, after = float(d.get("loss_before", math.nan)), float(d.get("loss_after", math.nan))
            evals, secs = int(d.get("evaluations") or 0), float(d.get("seconds") or 0.0)
        except (TypeError, ValueError):
            return None
        if not all(math.isfinite(v) and v > 0 for v in s.values()):
            return None
        return cls(s, apply(base, s), n, before, after, evals, secs, trials)


def constant_scales(scales: Mapping[str, float]) -> dict[str, float]:
    """Group scales as scales of the efficiency constants they multiply."""
    return {c: v for g, v in scales.items() for c in GROUPS[g]}


def apply(base: Hardware, scales: Mapping[str, float]) -> Hardware:
    """``base`` with each group's constants multiplied by its scale."""
    return perturbed(base, scale=constant_scales(scales))


def describe(stored: Mapping[str, Any] | None) -> str | None:
    """``device x1.08, host x0.93 from 11 trials (loss 2.1 -> 0.6)`` of a stored refit; None without one."""
    if not stored or not isinstance(stored.get("scales"), Mapping):
        return None
    scales = ", ".join(f"{g} x{float(v):.3g}" for g, v in stored["scales"].items())
    n = stored.get("n")
    before, after = stored.get("loss_before"), stored.get("loss_after")
    loss = ""
    if isinstance(before, int | float) and isinstance(after, int | float):
        loss = f" (loss {before:.3g} -> {after:.3g})"
    return f"{scales or 'no scales'} from {n} trial{'' if n == 1 else 's'}{loss}"


def _usable(base: Hardware, obs: Sequence[Observation]) -> list[tuple[Observation, bool]]:
    """The observations the simulator starts and that measured a fitted figure, each with whether its
    linear layers run in fp8."""
    out = []
    for o in obs:
        if not any(_finite_pos(o.measured.get(m)) for m in FIT_METRICS):
            continue
        try:
            plan = plan_engine(dataclasses.replace(o.config, hw=base))
        except StartupError:
            continue
        out.append((o, plan.quant == "fp8"))
    return out


def _finite_pos(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def residuals(hw: Hardware, obs: Sequence[Observation]) -> np.ndarray:
    """The weighted log errors of ``obs`` simulated on ``hw``: ``sqrt(w) * log(simulated / measured)`` per
    observation and fitted figure it measured (clipped; a figure the simulation lacks counts as clipped)."""
    out: list[float] = []
    for o in obs:
        try:
            s = simulate(dataclasses.replace(o.config, hw=hw), o.workload).summary
        except StartupError:
            s = None
        for m, w in FIT_METRICS.items():
            meas = o.measured.get(m)
            if meas is None or not _finite_pos(meas):
                continue
            sim = s.metric(m) if s is not None else math.nan
            err = math.log(sim / meas) if _finite_pos(sim) else _CLIP
            out.append(math.sqrt(w) * max(-_CLIP, min(_CLIP, err)))
    return np.asarray(out, dtype=float)


def refit(
    base: Hardware,
    observations: Sequence[Observation],
    *,
    max_obs: int = MAX_OBS,
    max_evals: int = MAX_EVALS,
    prior_obs: float = PRIOR_OBS,
    bounds: tuple[float, float] = BOUNDS,
) -> Refit:
    """The refit of ``base``'s constants to ``observations`` (module docstring)."""
    t0 = time.monotonic()
    given = list(observations)[-max_obs:]
    usable = _usable(base, given)
    obs = [o for o, _ in usable]
    kinds = {fp8 for _, fp8 in usable}
    groups = [g for g in GROUPS if g != "fp8" or (len(kinds) == 2 and base.fp8_flops is not None)]
    lam = prior_obs * sum(FIT_METRICS.values())
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    evals = 0

    def resid(x: np.ndarray) -> np.ndarray:
        nonlocal evals
        evals += 1
        r = residuals(apply(base, dict(zip(groups, np.exp(x).tolist(), strict=True))), obs)
        return np.concatenate([r, math.sqrt(lam) * x])

    x = np.zeros(len(groups))
    r = resid(x) if obs else np.zeros(0)
    before = float(r @ r)
    x, after = _gauss_newton(resid, x, r, (lo, hi), lambda: evals < max_evals) if obs else (x, before)
    scales = {g: float(math.exp(v)) for g, v in zip(groups, x, strict=True)}
    return Refit(
        scales=scales,
        hardware=apply(base, scales),
        n=len(obs),
        loss_before=before,
        loss_after=after,
        evaluations=evals,
        seconds=time.monotonic() - t0,
        trials=tuple(o.label for o in given if o.label is not None),
    )


def _gauss_newton(
    resid: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    r: np.ndarray,
    box: tuple[float, float],
    budget: Callable[[], bool],
    iterations: int = 6,
) -> tuple[np.ndarray, float]:
    """Damped Gauss-Newton from ``x`` (residuals ``r``) inside ``box`` on every coordinate, while ``budget()``
    allows another evaluation: the best point evaluated and its loss."""
    lo, hi = box
    best_x, best = x, float(r @ r)
    for _ in range(iterations):
        jac = np.empty((len(r), len(x)))
        for j in range(len(x)):
            if not budget():
                return best_x, best
            h = _STEP if best_x[j] + _STEP <= hi else -_STEP
            xj = best_x.copy()
            xj[j] += h
            jac[:, j] = (resid(xj) - r) / h
        g = jac.T @ r
        a = jac.T @ jac
        step = np.linalg.solve(a + 1e-3 * np.diag(np.diag(a) + 1.0), -g)
        moved = False
        for _half in range(3):
            if not budget():
                return best_x, best
            cand = np.clip(best_x + step, lo, hi)
            rc = resid(cand)
            loss = float(rc @ rc)
            if loss < best:
                best_x, best, r, moved = cand, loss, rc, True
                break
            step = step / 2
        if not moved or float(np.max(np.abs(step))) < 0.01:
            break
    return best_x, best
