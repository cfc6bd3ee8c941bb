"""tuner.search.restart_cost: the compile key of a flag set, which cache a server uses, the restart cost learnt
from a study's launches; and the start summary of ``tuner status`` (tuner.report.status). Every cache folder
is under tmp_path."""

from __future__ import annotations

import math
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tuner.report.status import StartSummary, summarize_starts
from tuner.search.restart_cost import (
    MARKER,
    NEUTRAL_FLAGS,
    PRIOR_CACHED_RATIO,
    PRIOR_REST_S,
    PRIOR_START_S,
    Launch,
    RestartCost,
    cache_folder,
    cache_identity,
    compile_key,
)

MODEL = "/models/llama"
BASE = {"max-num-seqs": 128, "max-num-batched-tokens": 8192, "block-size": 16, "quantization": "fp8"}

# ------------------------------------------------------------------------------------------ compile_key


@pytest.mark.parametrize(
    ("other", "same"),
    [
        # flags vLLM leaves out of its compile hash
        ({**BASE, "gpu-memory-utilization": 0.5}, True),
        ({**BASE, "gpu-memory-utilization": 0.9, "enable-prefix-caching": True}, True),
        ({**BASE, "swap-space": 8, "scheduling-policy": "priority", "seed": 3}, True),
        ({**BASE, "port": 8001, "host": "0.0.0.0", "disable-log-stats": True}, True),
        # None (a "none" choice: vLLM's default) is the same as the flag being absent
        ({**BASE, "kv-cache-dtype": None}, True),
        ({k: v for k, v in BASE.items() if k != "quantization"}, False),
        # order of the flags does not matter
        (dict(reversed(list(BASE.items()))), True),
        # the shaping flags change it
        ({**BASE, "max-num-seqs": 256}, False),
        ({**BASE, "max-num-batched-tokens": 4096}, False),
        ({**BASE, "block-size": 32}, False),
        ({**BASE, "quantization": None}, False),
        ({**BASE, "kv-cache-dtype": "fp8"}, False),
        ({**BASE, "enforce-eager": True}, False),
        # an unknown flag counts (the key may be finer than vLLM's, never coarser)
        ({**BASE, "some-future-flag": 1}, False),
    ],
)
def test_compile_key_table(other: dict[str, Any], same: bool) -> None:
    assert (compile_key(other, MODEL) == compile_key(BASE, MODEL)) is same


def test_compile_key_depends_on_the_model_and_is_short_and_stable() -> None:
    key = compile_key(BASE, MODEL)
    assert key != compile_key(BASE, "/models/other")
    assert key == compile_key(dict(BASE), MODEL)
    assert len(key) == 12 and all(c in "0123456789abcdef" for c in key)
    assert compile_key({}, MODEL) == compile_key({f: 1 for f in NEUTRAL_FLAGS}, MODEL)


def test_compile_key_tells_value_types_apart_only_as_json_does() -> None:
    # 16 and "16" are different flag values for the key (vLLM would parse them alike: a missed reuse only)
    assert compile_key({"block-size": 16}, MODEL) != compile_key({"block-size": "16"}, MODEL)
    assert compile_key({"block-size": 16}, MODEL) == compile_key({"block-size": 16}, MODEL)


# ----------------------------------------------------------------------------------------- cache_folder


@pytest.mark.parametrize(
    ("env", "expect"),
    [
        ({"VLLM_CACHE_ROOT": "/data/vc", "XDG_CACHE_HOME": "/x", "HOME": "/h"}, "/data/vc"),
        ({"XDG_CACHE_HOME": "/x", "HOME": "/h"}, "/x/vllm"),
        ({"HOME": "/h"}, "/h/.cache/vllm"),
        ({"VLLM_CACHE_ROOT": "", "XDG_CACHE_HOME": "", "HOME": "/h"}, "/h/.cache/vllm"),
        ({"VLLM_DISABLE_COMPILE_CACHE": "0", "HOME": "/h"}, "/h/.cache/vllm"),
        ({"VLLM_DISABLE_COMPILE_CACHE": "false", "HOME": "/h"}, "/h/.cache/vllm"),
        ({"VLLM_DISABLE_COMPILE_CACHE": "", "HOME": "/h"}, "/h/.cache/vllm"),
        ({"VLLM_DISABLE_COMPILE_CACHE": "1", "VLLM_CACHE_ROOT": "/data/vc"}, None),
        ({"VLLM_DISABLE_COMPILE_CACHE": "True", "HOME": "/h"}, None),
    ],
)
def test_cache_folder(env: dict[str, str], expect: str | None) -> None:
    got = cache_folder(env)
    assert got == (None if expect is None else Path(expect))


def test_cache_folder_without_home_is_this_users_home() -> None:
    assert cache_folder({}) == Path.home() / ".cache" / "vllm"  # computed only, nothing written


# --------------------------------------------------------------------------------------- cache_identity


def test_cache_identity_marker_written_once_and_stable(tmp_path: Path) -> None:
    env = {"VLLM_CACHE_ROOT": str(tmp_path / "vc"), "HOME": str(tmp_path / "home")}
    first = cache_identity(env)
    assert first is not None and first.startswith(socket.gethostname() + ":")
    marker = tmp_path / "vc" / MARKER
    assert marker.read_text().strip() == first.split(":", 1)[1]
    stamp = marker.stat().st_mtime_ns
    assert cache_identity(env) == first
    assert marker.stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in (tmp_path / "vc").iterdir()] == [MARKER]  # no temporary file left
    assert not (tmp_path / "home").exists()


def test_cache_identity_of_the_folder_picked_by_xdg_and_home(tmp_path: Path) -> None:
    by_xdg = cache_identity({"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "h")})
    by_home = cache_identity({"HOME": str(tmp_path / "h")})
    assert (tmp_path / "xdg" / "vllm" / MARKER).exists()
    assert (tmp_path / "h" / ".cache" / "vllm" / MARKER).exists()
    assert by_xdg and by_home and by_xdg != by_home


def test_a_wiped_cache_is_another_cache(tmp_path: Path) -> None:
    env = {"VLLM_CACHE_ROOT": str(tmp_path / "vc")}
    before = cache_identity(env)
    shutil.rmtree(tmp_path / "vc")
    after = cache_identity(env)
    assert before and after and before != after
    assert cache_identity(env) == after


def test_an_empty_marker_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "vc").mkdir()
    (tmp_path / "vc" / MARKER).write_text("\n")
    got = cache_identity({"VLLM_CACHE_ROOT": str(tmp_path / "vc")})
    assert got is not None and got.split(":", 1)[1] == (tmp_path / "vc" / MARKER).read_text().strip() != ""


def test_cache_identity_none_when_off_or_unwritable(tmp_path: Path) -> None:
    assert (
        cache_identity({"VLLM_DISABLE_COMPILE_CACHE": "1", "VLLM_CACHE_ROOT": str(tmp_path / "vc")}) is None
    )
    assert not (tmp_path / "vc").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cache_identity({"VLLM_CACHE_ROOT": str(blocker / "vllm")}) is None  # fails for root too
    (tmp_path / "dir-marker" / MARKER).mkdir(parents=True)  # the marker's name taken by a folder
    assert cache_identity({"VLLM_CACHE_ROOT": str(tmp_path / "dir-marker")}) is None


# ----------------------------------------------------------------------------------------- RestartCost


def key_of(params: Mapping[str, Any]) -> str:
    return compile_key(params, MODEL)


def launch(
    params: dict[str, Any] | None,
    *,
    cached: bool = False,
    start: float | None = 80.0,
    trial: float | None = 130.0,
    cache: str | None = "host:A",
) -> Launch:
    return Launch(
        key=key_of(params or {}),
        cache=cache,
        cached=cached,
        startup_s=start,
        trial_s=trial,
        params=params,
    )


P1 = {"gpu-memory-utilization": 0.5, "max-num-seqs": 64, "block-size": 16}
P2 = {"gpu-memory-utilization": 0.7, "max-num-seqs": 256, "block-size": 32}
P3 = {"gpu-memory-utilization": 0.3, "max-num-seqs": 128, "block-size": 16}
P4 = {"gpu-memory-utilization": 0.4, "max-num-seqs": 1024, "block-size": 32}


def test_priors_without_data() -> None:
    cost = RestartCost.learn([], cache="host:A", key_of=key_of)
    assert cost.compiled == frozenset() and cost.compiled_params == ()
    assert cost.new_s == pytest.approx(PRIOR_START_S + PRIOR_REST_S)
    assert cost.cached_s == pytest.approx(PRIOR_START_S * PRIOR_CACHED_RATIO + PRIOR_REST_S)
    assert cost.seconds(P1) == cost.new_s  # nothing compiled yet
    assert cost.log_cost(P1) == pytest.approx(math.log(cost.new_s))
    assert 0 < cost.saving < 1


def test_new_starts_only() -> None:
    seen = [launch(P1, start=80, trial=130), launch(P2, start=100, trial=150)]
    cost = RestartCost.learn(seen, cache="host:A", key_of=key_of)
    assert cost.new_s == pytest.approx(90 + 50)
    assert cost.cached_s == pytest.approx(90 * PRIOR_CACHED_RATIO + 50)
    assert cost.compiled == {key_of(P1), key_of(P2)}
    assert cost.seconds(P1) == cost.cached_s and cost.seconds(P3) == cost.new_s
    assert cost.seconds({**P1, "gpu-memory-utilization": 0.9}) == cost.cached_s  # neutral flag


def test_cached_starts_only() -> None:
    seen = [launch(P1, cached=True, start=50, trial=110), launch(P2, cached=True, start=60, trial=120)]
    cost = RestartCost.learn(seen, cache="host:A", key_of=key_of)
    assert cost.cached_s == pytest.approx(55 + 60)
    assert cost.new_s == pytest.approx(55 / PRIOR_CACHED_RATIO + 60)


def test_both_kinds_use_medians_of_starts_and_of_the_rest() -> None:
    seen = [
        launch(P1, start=90, trial=150),
        launch(P2, start=110, trial=150),
        launch(P3, start=100, trial=140),
        launch(P1, cached=True, start=50, trial=100),
        launch(P2, cached=True, start=70, trial=110),
    ]
    cost = RestartCost.learn(seen, cache="host:A", key_of=key_of)
    rest = 40.0  # median of 60, 40, 40, 50, 40
    assert cost.new_s == pytest.approx(100 + rest)
    assert cost.cached_s == pytest.approx(60 + rest)
    assert cost.saving == pytest.approx(1 - 100 / 140)


def test_a_compiled_key_is_never_assumed_slower() -> None:
    seen = [launch(P1, start=60, trial=100), launch(P1, cached=True, start=90, trial=130)]
    cost = RestartCost.learn(seen, cache="host:A", key_of=key_of)
    assert cost.cached_s == cost.new_s and cost.saving == 0.0
    assert cost.log_cost(P1) == cost.log_cost(P4)


def test_unhealthy_launches_give_no_start_and_no_compiled_key() -> None:
    seen = [
        launch(P1, start=None, trial=20),  # never became healthy
        launch(P2, start=0.0, trial=5),  # refused before launch
        launch(P3, start=None, trial=None),
    ]
    cost = RestartCost.learn(seen, cache="host:A", key_of=key_of)
    assert cost.compiled == frozenset() and cost.compiled_params == ()
    assert cost.new_s == pytest.approx(PRIOR_START_S + PRIOR_REST_S)


def test_compiled_only_in_the_same_cache_but_costs_from_any() -> None:
    seen = [
        launch(P1, cache="host:A", start=70, trial=120),
        launch(P2, cache="host:B", start=90, trial=140),
        launch(P3, cache=None, start=110, trial=160),
        launch(P4, cache="host:A", start=None, trial=30),
    ]
    in_a = RestartCost.learn(seen, cache="host:A", key_of=key_of)
    assert in_a.compiled == {key_of(P1)}
    assert in_a.new_s == pytest.approx(90 + 50)  # the starts of every cache
    in_b = RestartCost.learn(seen, cache="host:B", key_of=key_of)
    assert in_b.compiled == {key_of(P2)}
    off = RestartCost.learn(seen, cache=None, key_of=key_of)
    assert off.compiled == frozenset() and off.compiled_params == ()
    assert off.new_s == in_a.new_s


def test_compiled_params_exclude_neutral_flags_and_the_baseline() -> None:
    seen = [
        launch(None),  # the baseline: compiled, but it has no searched values to offer
        launch(P1),
        launch({**P1, "gpu-memory-utilization": 0.9}, cached=True, start=50),  # same key again
        launch(P2, cache="host:B"),
        launch(P3, start=None),
    ]
    cost = RestartCost.learn(seen, cache="host:A", key_of=key_of)
    assert cost.compiled == {key_of({}), key_of(P1)}
    assert cost.compiled_params == ({"max-num-seqs": 64, "block-size": 16},)


# ------------------------------------------------------------------------------------- summarize_starts


def test_summarize_starts_counts_means_and_rate() -> None:
    seen = [
        launch(P1, start=100, trial=150),
        launch(P2, start=120, trial=200),
        launch(P1, cached=True, start=60, trial=100),
        launch(P2, cached=True, start=80, trial=None),  # no trial time: a start, not a rate
        launch(P3, start=None, trial=50),  # never healthy: time, not a start
        launch(P4, start=None, trial=0.0),  # no time at all
    ]
    s = summarize_starts(seen)
    assert (s.cached, s.new) == (2, 2)
    assert s.cached_mean_s == pytest.approx(70) and s.new_mean_s == pytest.approx(110)
    assert s.trials_per_hour == pytest.approx(3600 * 4 / (150 + 200 + 100 + 50))  # 28.8
    assert s.to_dict() == {
        "cached_starts": 2,
        "new_key_starts": 2,
        "cached_start_mean_s": s.cached_mean_s,
        "new_key_start_mean_s": s.new_mean_s,
        "trials_per_hour": s.trials_per_hour,
    }


def test_summarize_no_launches() -> None:
    assert summarize_starts([]) == StartSummary(0, 0, None, None, None)
    only_new = summarize_starts([launch(P1, start=90, trial=120)])
    assert only_new == StartSummary(0, 1, None, 90.0, 30.0)
