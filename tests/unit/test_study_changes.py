"""tuner.search.changes: which study-file differences invalidate the stored trials (table tests), and the
one line that names them."""

from __future__ import annotations

import pytest

from tuner.search.changes import ABSENT, Change, describe, diff, file_keys, invalidates


@pytest.mark.parametrize(
    ("path", "invalidating"),
    [
        ("search.max-num-seqs.high", True),
        ("search.block-size", True),
        ("workload.input_tokens", True),
        ("workload.dataset.path", True),
        ("workload.capacity.resolution", True),
        ("slo.ttft_p99_ms", True),
        ("objectives", True),
        ("model", True),
        ("server.command", True),
        ("server.args.max-model-len", True),
        ("server.env.VLLM_USE_FLASHINFER_SAMPLER", True),
        ("a_key_added_later", True),
        ("n_trials", False),
        ("timeout_s", False),
        ("sampler", False),
        ("seed", False),
        ("confirm.top", False),
        ("storage", False),
        ("results_dir", False),
        ("baseline", False),
        ("baseline.gpu-memory-utilization", False),
        ("server.host", False),
        ("server.startup_timeout_s", False),
        ("compile_key_reuse", False),
    ],
)
def test_classification(path: str, invalidating: bool) -> None:
    assert invalidates(path) is invalidating


def test_diff_goes_down_mappings_and_compares_lists_whole() -> None:
    old = {
        "slo": {"ttft_p99_ms": 1000.0, "itl_p99_ms": None},
        "server": {"command": ["vllm", "serve"]},
        "n": 1,
    }
    new = {"slo": {"ttft_p99_ms": 100.0}, "server": {"command": ["python", "-m", "x"]}, "n": 1, "extra": 2}
    assert diff(old, new) == [
        Change("slo.ttft_p99_ms", 1000.0, 100.0),
        Change("server.command", ["vllm", "serve"], ["python", "-m", "x"]),
        Change("extra", ABSENT, 2),
    ]


def test_a_key_absent_on_one_side_and_null_on_the_other_is_no_change() -> None:
    assert diff({"workload": {"input_tokens": 8}}, {"workload": {"input_tokens": 8, "dataset": None}}) == []
    assert diff({}, {}) == []


def test_describe_names_a_few_then_counts() -> None:
    changes = [Change(f"search.f{i}.high", i, i + 1) for i in range(5)]
    assert (
        describe(changes)
        == "search.f0.high 0 -> 1, search.f1.high 1 -> 2, search.f2.high 2 -> 3 (and 2 more)"
    )
    line = describe([Change("x", ABSENT, "a" * 100)])
    assert line.startswith('x (absent) -> "aaa') and line.endswith("...") and len(line) < 70


def test_file_keys_finds_the_files_a_workload_names() -> None:
    workload = {
        "dataset": {"path": "chat.jsonl", "format": "jsonl"},
        "input_tokens": {"dist": "empirical", "file": "l.csv"},
    }
    assert file_keys(workload, "workload.") == [
        "workload.dataset.path: chat.jsonl",
        "workload.input_tokens.file: l.csv",
    ]
