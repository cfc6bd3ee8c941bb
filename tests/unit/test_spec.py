"""The study-file loader: good files validate, bad ones give one line naming file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.config.paths import default_storage, resolve_model
from tuner.config.spec import Choices, FloatRange, IntRange, load_spec, spec_from_dict
from tuner.errors import SpecError

GOOD = {
    "name": "demo",
    "model": "org/model",
    "server": {"args": {"max-model-len": 2048}},
    "search": {
        "gpu-memory-utilization": {"low": 0.1, "high": 0.5},
        "max-num-seqs": {"low": 4, "high": 256, "log": True},
        "block-size": {"choices": [16, 32]},
        "quantization": {"choices": ["none", "fp8", {"name": "awq", "model": "org/model-awq"}]},
    },
    "workload": {"input_tokens": 256, "output_tokens": 64, "concurrency": 32, "requests": 200},
    "slo": {"ttft_p99_ms": 2000, "itl_p99_ms": 100},
}


def with_(path: str, value: object) -> dict[str, object]:
    import copy

    doc = copy.deepcopy(GOOD)
    node: dict[str, object] = doc
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})  # type: ignore[assignment]
    node[last] = value
    return doc


def test_good_file_types() -> None:
    s = spec_from_dict(GOOD, "s.yaml")
    assert isinstance(s.search["gpu-memory-utilization"], FloatRange)
    assert isinstance(s.search["max-num-seqs"], IntRange)
    assert isinstance(s.search["block-size"], Choices)
    assert s.search["quantization"].labels() == ["none", "fp8", "awq"]  # type: ignore[union-attr]
    assert s.metric_names == ["output_throughput", "ttft_p99"]
    assert s.slo.limits() == {"ttft_p99": 2000, "itl_p99": 100}


@pytest.mark.parametrize(
    ("path", "value", "key", "reason"),
    [
        ("bogus", 1, "bogus", "unknown key"),
        ("workload.bogus", 1, "workload.bogus", "unknown key"),
        ("search.max-num-seqs", {"low": 9, "high": 2}, "search.max-num-seqs", "must not exceed"),
        ("search.gpu-memory-utilization", {"low": 0.5, "high": 1.5}, "", "(0, 1]"),
        ("search.max-num-seqs", {"low": 0, "high": 8, "log": True}, "search.max-num-seqs", "low > 0"),
        ("search.--max-num-seqs", {"low": 1, "high": 2}, "search", "without leading dashes"),
        ("search.port", {"low": 1, "high": 2}, "search", "set by tuner"),
        ("search.block-size", {"choices": []}, "search.block-size.choices", "at least 1"),
        ("search.block-size", {"choices": [16, 16]}, "search.block-size.choices", "distinct"),
        ("workload.input_tokens", -1, "workload.input_tokens", "greater than 0"),
        ("workload.input_tokens", "many", "workload.input_tokens", "integer"),
        ("workload.request_rate", 5, "workload", "not both"),
        ("slo.ttft_p99_ms", 0, "slo.ttft_p99_ms", "greater than 0"),
        ("objectives", ["maximize nothing"], "objectives", "unknown objective metric"),
        ("objectives", ["minimize output_throughput"], "objectives", "can only be maximized"),
        ("objectives", ["fastest please"], "objectives", "must read"),
        ("sampler", "bayes", "sampler", "tpe"),
        ("server.args", {"max-num-seqs": 8}, "", "both fixed"),
        ("search.enable-x", {"choices": [{"name": "a", "model": "b"}]}, "", "only quantization"),
        ("name", "a b", "name", "letters"),
    ],
)
def test_bad_files_name_key_and_reason(path: str, value: object, key: str, reason: str) -> None:
    with pytest.raises(SpecError) as e:
        spec_from_dict(with_(path, value), "s.yaml")
    msg = str(e.value)
    assert msg.startswith("s.yaml: ")
    assert "\n" not in msg
    assert key in msg and reason in msg, msg


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("name: [unclosed", "malformed YAML"),
        ("- a\n- b\n", "mapping"),
        ("name: x\n", "required key is missing"),
    ],
)
def test_bad_yaml(tmp_path: Path, text: str, reason: str) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=reason):
        load_spec(p)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="directory"):
        load_spec(tmp_path)


def test_paths_resolve_beside_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    p = tmp_path / "studies" / "s.yaml"
    p.write_text(yaml.safe_dump({**GOOD, "model": "../models/tiny"}))
    s = load_spec(p)
    assert resolve_model(s) == str((tmp_path / "models" / "tiny").resolve())
    assert default_storage(s) == f"sqlite:///{tmp_path / 'studies' / 'demo.db'}"
    assert resolve_model(spec_from_dict(GOOD)) == "org/model"  # a hub name is left alone


def test_baseline_forms() -> None:
    assert spec_from_dict(with_("baseline", {"gpu-memory-utilization": 0.3})).baseline == {
        "gpu-memory-utilization": 0.3
    }
    with pytest.raises(SpecError, match="already fixed"):
        spec_from_dict(with_("baseline", {"max-model-len": 1}))


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5))
trees = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "x", "storage", "n_trials", "sampler"]), trees, max_size=6))
def test_loader_never_raises_anything_but_spec_error(doc: dict[str, object]) -> None:
    """Whatever the YAML parses to, the loader validates it or raises SpecError with one line."""
    try:
        spec_from_dict(doc, "f.yaml")
    except SpecError as e:
        assert "\n" not in str(e) and str(e).startswith("f.yaml: ")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(GOOD)), trees)
def test_loader_one_key_mutated(key: str, value: object) -> None:
    doc = dict(GOOD)
    doc[key] = value
    try:
        spec_from_dict(doc, "f.yaml")
    except SpecError as e:
        assert "\n" not in str(e)
