"""Online refit of the simulator's efficiency constants (tuner.sim.refit) on a synthetic study: the "world" is
the simulator itself with the device constants x1.3 and the host constants x0.7."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tuner.sim.args import config_from_flags
from tuner.sim.engine import SimWorkload, simulate
from tuner.sim.hardware import get_hardware
from tuner.sim.predict import PREDICTED_METRICS
from tuner.sim.refit import GROUPS, Observation, Refit, apply, describe, refit, residuals

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
BASE = get_hardware("H200")
TRUTH = {"device": 1.3, "host": 0.7}
WORLD = apply(BASE, TRUTH)
#: (flags, concurrency) of the synthetic study's trials, in trial order
CASES = [
    ({"max-num-seqs": 128, "max-num-batched-tokens": 2048}, 32),
    ({"max-num-seqs": 256, "max-num-batched-tokens": 8192}, 48),
    ({"max-num-batched-tokens": 16384}, 64),
    ({"max-num-seqs": 64}, 16),
    ({"max-num-batched-tokens": 4096}, 8),
    ({"max-num-seqs": 32, "max-num-batched-tokens": 1024}, 24),
]
HELD_OUT = ({"max-num-seqs": 512, "max-num-batched-tokens": 4096}, 40)


def _observe(flags: dict[str, int], conc: int, label: int, hw: object = WORLD) -> Observation:
    cfg = config_from_flags(LLAMA, {"max-model-len": 4096, **flags}, "H200")
    w = SimWorkload(input_tokens=1024, output_tokens=128, requests=2 * conc, concurrency=conc)
    s = simulate(dataclasses.replace(cfg, hw=hw), w).summary  # type: ignore[arg-type]
    return Observation(cfg, w, {m: s.metric(m) for m in PREDICTED_METRICS}, label)


@pytest.fixture(scope="module")
def study() -> list[Observation]:
    return [_observe(f, c, i) for i, (f, c) in enumerate(CASES)]


def _error(hw: object, o: Observation) -> float:
    r = residuals(hw, [o])  # type: ignore[arg-type]
    return float(np.sqrt(r @ r))


def test_refit_moves_both_scales_toward_the_world_and_the_prediction_error_drops(
    study: list[Observation],
) -> None:
    r = refit(BASE, study)
    assert r.n == len(CASES) and r.trials == tuple(range(len(CASES)))
    assert set(r.scales) == {"device", "host"}  # no fp8 group: every trial runs bf16
    for g, truth in TRUTH.items():
        assert abs(math.log(r.scales[g] / truth)) < abs(math.log(truth)), (g, r.scales)
    assert r.loss_after < r.loss_before / 2
    held = _observe(*HELD_OUT, label=99)
    assert _error(r.hardware, held) < _error(BASE, held) / 2  # better on a configuration it never saw
    assert r.evaluations <= 24


def test_one_observation_barely_moves_the_constants(study: list[Observation]) -> None:
    r = refit(BASE, study[:1])
    assert r.n == 1
    assert all(0.85 < v < 1.15 for v in r.scales.values()), r.scales
    assert r.loss_after <= r.loss_before


def test_the_world_itself_needs_no_refit() -> None:
    obs = [_observe(f, c, i, hw=BASE) for i, (f, c) in enumerate(CASES[:3])]
    r = refit(BASE, obs)
    assert r.loss_before < 1e-9
    assert r.scales == {"device": 1.0, "host": 1.0}


def test_fp8_is_fitted_only_beside_bf16_trials(study: list[Observation]) -> None:
    fp8 = _observe({"quantization": "fp8", "max-num-batched-tokens": 4096}, 32, 7)  # type: ignore[dict-item]
    assert set(refit(BASE, [fp8]).scales) == {"device", "host"}
    assert set(refit(BASE, [*study[:2], fp8]).scales) == {"device", "host", "fp8"}


def test_no_usable_observation_keeps_the_profile() -> None:
    oom = Observation(
        config_from_flags(LLAMA, {"gpu-memory-utilization": 0.05}, "H200"),
        SimWorkload(input_tokens=16, output_tokens=4, requests=4, concurrency=2),
        {"output_throughput": 100.0},
        3,
    )
    r = refit(BASE, [oom])
    assert r.n == 0 and r.trials == (3,)
    assert r.hardware == apply(BASE, r.scales) and all(v == 1.0 for v in r.scales.values())


def test_only_the_latest_observations_count(study: list[Observation]) -> None:
    r = refit(BASE, study, max_obs=2, max_evals=4)
    assert r.trials == (4, 5) and r.n == 2 and r.evaluations <= 4


def test_the_stored_form_round_trips(study: list[Observation]) -> None:
    r = refit(BASE, study[:2])
    assert Refit.from_dict(r.to_dict(), BASE) == r
    assert Refit.from_dict(r.to_dict(), get_hardware("H100")) is None  # made on another profile
    assert Refit.from_dict({**r.to_dict(), "scales": {"nope": 1.1}}, BASE) is None
    assert Refit.from_dict({**r.to_dict(), "scales": {"device": -1}}, BASE) is None
    assert Refit.from_dict({**r.to_dict(), "n": "x"}, BASE) is None
    line = describe(r.to_dict())
    assert line is not None and line.startswith("device x") and "from 2 trials" in line
    assert describe(None) is None


def test_group_scales_multiply_their_constants() -> None:
    hw = apply(BASE, {"device": 2.0})
    for c in GROUPS["device"]:
        assert getattr(hw.efficiency, c) == pytest.approx(2 * getattr(BASE.efficiency, c))
    assert hw.efficiency.step_s == BASE.efficiency.step_s
