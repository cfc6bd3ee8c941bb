"""tuner.measure.telemetry.prometheus against a real /metrics capture of vLLM CPU 0.32.0 and hand-made texts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tuner.measure.telemetry.prometheus import (
    Histogram,
    PrometheusParseError,
    counter_delta,
    histogram_delta,
    parse,
    vllm_metrics,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_metrics_cpu.txt"


@pytest.fixture(scope="module")
def real_text() -> str:
    return FIXTURE.read_text()


def test_parse_real_capture(real_text: str) -> None:
    expo = parse(real_text, strict=True)
    assert len(expo.samples) > 100
    assert expo.types["vllm:time_to_first_token_seconds"] == "histogram"
    assert expo.types["vllm:generation_tokens_total"] == "counter"
    assert expo.types["vllm:kv_cache_usage_perc"] == "gauge"
    (start,) = expo.select("process_start_time_seconds")
    assert start.labels == () and start.value == pytest.approx(1.79546673891e09)
    assert expo.total("vllm:request_success_total", finished_reason="length") == 5.0
    assert expo.total("vllm:request_success_total") == 5.0  # summed over finished_reason


def test_vllm_view_of_real_capture(real_text: str) -> None:
    m = vllm_metrics(real_text)
    # 5 requests x 16 output tokens, 6 prompt tokens each
    assert m.generation_tokens == 80.0 and m.prompt_tokens == 30.0
    assert m.requests_succeeded == 5.0
    assert m.ttft is not None and m.ttft.count == 5.0
    assert m.ttft.sum == pytest.approx(0.07599687576293945)
    assert m.itl is not None and m.itl.count == 75.0  # 15 gaps per request
    assert m.itl.mean == pytest.approx(0.1809225810000612 / 75)
    assert m.e2e is not None and m.e2e.count == 5.0
    assert m.queue_time is not None and m.queue_time.count == 5.0
    assert m.kv_cache_usage == 0.0 and m.requests_running == 0.0 and m.requests_waiting == 0.0
    assert m.preemptions == 0.0
    assert m.prefix_cache_queries == 30.0 and m.prefix_cache_hits == 0.0 and m.prefix_cache_hit_rate == 0.0
    assert m.num_gpu_blocks == 5390 and m.block_size == 128
    assert m.gpu_memory_utilization == pytest.approx(0.15)
    assert m.kv_cache_size_tokens == 689920
    assert m.cache_config["enable_prefix_caching"] == "True"
    assert m._config_number("num_cpu_blocks") is None  # "None" in the labels


def test_histogram_quantiles_from_real_buckets(real_text: str) -> None:
    ttft = vllm_metrics(real_text).ttft
    assert ttft is not None
    assert ttft.buckets[-1] == (math.inf, 5.0)
    # 4 of 5 in (0.005, 0.01], the fifth in (0.04, 0.06]
    assert ttft.quantile(0.5) == pytest.approx(0.005 + 0.005 * 2.5 / 4)
    assert ttft.quantile(0.99) == pytest.approx(0.04 + 0.02 * 0.95)
    assert Histogram(0.0, 0.0).quantile(0.5) is None
    with pytest.raises(ValueError):
        ttft.quantile(1.5)


def test_quantile_in_inf_bucket_is_largest_finite_bound() -> None:
    h = Histogram(sum=100.0, count=2.0, buckets=((1.0, 1.0), (math.inf, 2.0)))
    assert h.quantile(0.99) == 1.0


def test_name_level_helpers(real_text: str) -> None:
    before = real_text.replace(
        'vllm:generation_tokens_total{engine="0",model_name="models/tiny"} 80.0',
        'vllm:generation_tokens_total{engine="0",model_name="models/tiny"} 16.0',
    )
    assert counter_delta(before, real_text, "vllm:generation_tokens_total") == 64.0
    assert counter_delta(real_text, before, "vllm:generation_tokens_total") == 16.0  # reset
    assert counter_delta(before, real_text, "vllm:nope_total") is None
    assert histogram_delta(real_text, real_text, "vllm:time_to_first_token_seconds") == (0.0, 0.0)
    assert histogram_delta("", real_text, "vllm:inter_token_latency_seconds") == pytest.approx(
        (0.1809225810000612, 75.0)
    )
    assert histogram_delta(before, real_text, "vllm:nope") is None


MULTI = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a"} 3
vllm:num_requests_waiting{engine="1",model_name="a"} 4
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="a"} 0.5
vllm:gpu_cache_usage_perc{engine="1",model_name="a"} 0.7
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{engine="0",le="0.1"} 1
vllm:time_per_output_token_seconds_bucket{engine="0",le="+Inf"} 2
vllm:time_per_output_token_seconds_bucket{engine="1",le="0.1"} 3
vllm:time_per_output_token_seconds_bucket{engine="1",le="+Inf"} 3
vllm:time_per_output_token_seconds_sum{engine="0"} 0.5
vllm:time_per_output_token_seconds_sum{engine="1"} 0.1
vllm:time_per_output_token_seconds_count{engine="0"} 2
vllm:time_per_output_token_seconds_count{engine="1"} 3
vllm:gpu_prefix_cache_queries_total{engine="0"} 100
vllm:gpu_prefix_cache_hits_total{engine="0"} 25
"""


def test_older_names_and_multiple_engines() -> None:
    m = vllm_metrics(MULTI)
    assert m.requests_waiting == 7.0  # summed over engines
    assert m.kv_cache_usage == pytest.approx(0.6)  # a ratio: averaged
    assert m.itl == Histogram(sum=0.6, count=5.0, buckets=((0.1, 4.0), (math.inf, 5.0)))
    assert m.prefix_cache_hit_rate == 0.25
    assert m.ttft is None and m.generation_tokens is None and m.cache_config == {}
    assert m.num_gpu_blocks is None


def test_label_escapes_special_values_timestamps_and_exemplars() -> None:
    text = (
        'm{path="C:\\\\x",msg="say \\"hi\\"\\nbye", empty=""} NaN 1700000000000\n'
        "m_inf +Inf\n"
        "m_neg -Inf\n"
        "m_exp 1.5e+03\n"
        'h_bucket{le="1"} 3 # {trace_id="abc"} 0.5 1700000000.1\n'
        "# EOF\n"
    )
    expo = parse(text, strict=True)
    s = expo.samples[0]
    assert s.label_dict == {"path": "C:\\x", "msg": 'say "hi"\nbye', "empty": ""}
    assert math.isnan(s.value) and s.timestamp_ms == 1700000000000
    assert expo.total("m_inf") == math.inf and expo.total("m_neg") == -math.inf
    assert expo.total("m_exp") == 1500.0
    assert expo.total("h_bucket") == 3.0
    assert expo.total("missing") is None and expo.info("missing") is None


@pytest.mark.parametrize(
    "bad", ['m{a="x} 1', "m{a=x} 1", "m", "m 1 2 3", "m abc", '{a="b"} 1', 'm{1a="x"} 1']
)
def test_malformed_lines(bad: str) -> None:
    with pytest.raises(PrometheusParseError, match="line 2"):
        parse("ok 1\n" + bad, strict=True)
    assert [s.name for s in parse("ok 1\n" + bad).samples] == ["ok"]  # lenient: skipped


# ----------------------------------------------------------------------------------------------- scrape
