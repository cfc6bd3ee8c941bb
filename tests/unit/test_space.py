"""The search space: distributions, suggestions, and the pre-launch rules."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.config.space import distributions, outside_search, parse_sets, prelaunch_violation, suggest
from tuner.config.spec import StudySpec, spec_from_dict
from tuner.errors import UsageError

BASE = {"name": "s", "model": "m", "workload": {"input_tokens": 8, "output_tokens": 8, "requests": 4}}


def make(search: dict[str, object], **extra: object) -> StudySpec:
    return spec_from_dict({**BASE, "search": search, **extra})


def test_distributions_follow_the_file() -> None:
    spec = make(
        {
            "gpu-memory-utilization": {"low": 0.1, "high": 0.5, "step": 0.05},
            "max-num-seqs": {"low": 2, "high": 64, "log": True},
            "max-num-batched-tokens": {"low": 1024, "high": 8192, "step": 1024},
            "block-size": {"choices": [16, 32]},
            "quantization": {"choices": [None, "fp8", {"name": "awq", "model": "x-awq"}]},
            "enable-prefix-caching": {"choices": [True, False]},
        }
    )
    d = distributions(spec)
    assert list(d) == [
        "gpu-memory-utilization",
        "max-num-seqs",
        "max-num-batched-tokens",
        "block-size",
        "quantization",
        "enable-prefix-caching",
    ]
    assert d["gpu-memory-utilization"] == FloatDistribution(0.1, 0.5, step=0.05)
    assert d["max-num-seqs"] == IntDistribution(2, 64, log=True)
    assert d["max-num-batched-tokens"] == IntDistribution(1024, 8192, step=1024)
    assert d["block-size"] == CategoricalDistribution([16, 32])
    assert d["quantization"] == CategoricalDistribution(["none", "fp8", "awq"])
    assert d["enable-prefix-caching"] == CategoricalDistribution([True, False])


def test_float_log_with_step_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="log and step"):  # the study file loader refuses it already
        distributions(make({"gpu-memory-utilization": {"low": 0.1, "high": 0.5, "log": True, "step": 0.1}}))


def test_suggest_stays_in_range_and_uses_labels() -> None:
    spec = make(
        {
            "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
            "max-num-seqs": {"low": 2, "high": 64, "log": True},
            "quantization": {"choices": [None, {"name": "awq", "model": "x-awq"}]},
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        t = study.ask()
        p = suggest(t, spec)
        assert 0.1 <= float(p["gpu-memory-utilization"]) <= 0.5  # type: ignore[arg-type]
        assert isinstance(p["max-num-seqs"], int) and 2 <= p["max-num-seqs"] <= 64
        seen.add(p["quantization"])
        assert t.params == p
        study.tell(t, 0.0)
    assert seen == {"none", "awq"}


def test_suggest_honours_queued_params() -> None:
    spec = make({"max-num-seqs": {"low": 2, "high": 64}})
    study = optuna.create_study()
    study.enqueue_trial({"max-num-seqs": 17})
    assert suggest(study.ask(), spec) == {"max-num-seqs": 17}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            {"max-num-batched-tokens": 1024, "max-model-len": 2048, "enable-chunked-prefill": False},
            "max-model-len",
        ),
        ({"max-num-batched-tokens": 1024, "max-model-len": 2048, "enable-chunked-prefill": True}, None),
        ({"max-num-batched-tokens": 1024, "max-model-len": 2048}, None),  # chunked prefill is vLLM's default
        ({"max-num-batched-tokens": 2048, "max-model-len": 2048, "enable-chunked-prefill": False}, None),
        ({"max-num-batched-tokens": 32, "max-num-seqs": 64}, "max-num-seqs"),
        ({"max-num-batched-tokens": 64, "max-num-seqs": 64}, None),
        ({"max-num-batched-tokens": None, "max-num-seqs": 64}, None),
        ({"max-num-batched-tokens": "none", "max-num-seqs": 64}, None),
        ({"long-prefill-token-threshold": 4096, "max-model-len": 2048}, "long-prefill-token-threshold"),
        ({}, None),
    ],
)
def test_prelaunch_rules(flags: dict[str, object], expected: str | None) -> None:
    reason = prelaunch_violation(flags)  # type: ignore[arg-type]
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


SET_SPACE = {
    "max-num-seqs": {"low": 2, "high": 64},
    "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
    "block-size": {"choices": [16, 32]},
    "quantization": {"choices": [None, "fp8"]},
}


def test_sets_take_the_values_the_space_stores() -> None:
    sets = [
        "max-num-seqs=8.0",
        "gpu-memory-utilization=0.3",
        "--block-size=32",
        "quantization=",
        "dtype=half",
    ]
    assert parse_sets(make(SET_SPACE), sets) == {
        "max-num-seqs": 8,
        "gpu-memory-utilization": 0.3,
        "block-size": 32,
        "quantization": "none",
        "dtype": "half",  # not searched: passed as given
    }


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("noequals", "flag=value"),
        ("host=0.0.0.0", "not a flag tuner may set"),
        ("Bad_Flag=1", "not a flag tuner may set"),
        ("max-num-seqs=[1, 2]", "single number"),
        ("max-num-seqs=fast", "needs a number"),
        ("max-num-seqs=2.5", "needs an integer"),
    ],
)
def test_bad_sets_are_usage_errors(item: str, reason: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_sets(make(SET_SPACE), [item])
    assert str(e.value).startswith(f"--set {item!r}: ") and reason in str(e.value)


def test_sets_outside_the_search_are_taken_and_named() -> None:
    """``measure --set`` takes any value vLLM takes; the ones the search would never propose are named."""
    spec = make(SET_SPACE)
    params = parse_sets(spec, ["max-num-seqs=1000", "block-size=48", "gpu-memory-utilization=0.3"])
    assert params == {"max-num-seqs": 1000, "block-size": 48, "gpu-memory-utilization": 0.3}
    assert outside_search(spec, params) == [
        "max-num-seqs=1000 lies outside the study's search range [2, 64]",
        "block-size=48 is none of the study's choices [16, 32]",
    ]
    assert outside_search(spec, parse_sets(spec, ["block-size=32", "quantization=fp8"])) == []
