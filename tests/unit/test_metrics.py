"""tuner.measure.metrics.summarize on hand-computed records (times in seconds, latencies in ms)."""

from __future__ import annotations

import math

import pytest

from tuner.load.records import RequestRecord
from tuner.measure.metrics import Distribution, Summary, records_to_dicts, summarize


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def fast() -> RequestRecord:
    """TTFT 100, ITL 100 and 200, TPOT (400-100)/2 = 150, E2E 400; 3 tokens, prompt 10."""
    return RequestRecord(
        send_time=0.0,
        first_token_time=0.1,
        token_times=[0.1, 0.2, 0.4],
        chunk_tokens=[1, 1, 1],
        end_time=0.4,
        prompt_tokens=10,
        output_tokens=3,
    )


def slow() -> RequestRecord:
    """TTFT 300, ITL 100, 3 tokens in 2 chunks (usage says 3), TPOT (600-400)/2 = 100, E2E 500."""
    return RequestRecord(
        send_time=0.1,
        first_token_time=0.4,
        token_times=[0.4, 0.5],
        chunk_tokens=[1, 2],
        end_time=0.6,
        prompt_tokens=20,
        output_tokens=3,
    )


def failed() -> RequestRecord:
    return RequestRecord(send_time=0.2, end_time=0.25, error="HTTP 500: boom")


def warm() -> RequestRecord:
    return RequestRecord(
        send_time=-5.0,
        first_token_time=-1.0,
        token_times=[-1.0, 3.0],
        end_time=9.0,
        prompt_tokens=1000,
        output_tokens=2,
        warmup=True,
    )


def test_hand_computed_summary() -> None:
    s = summarize([warm(), fast(), slow(), failed()])
    assert s.completed == 2
    assert s.failed == 1
    assert s.failed_fraction == approx(1 / 3)
    assert s.duration_s == approx(0.6)  # first measured send (0.0) to last end (0.6): warm-up excluded
    assert s.generated_tokens_total == 6
    assert s.prompt_tokens_total == 30
    assert s.output_throughput_tok_s == approx(6 / 0.6)
    assert s.total_throughput_tok_s == approx(36 / 0.6)
    assert s.request_throughput_rps == approx(2 / 0.6)
    assert s.errors == {"HTTP 500: boom": 1}


def test_latency_distributions() -> None:
    s = summarize([fast(), slow(), failed(), warm()])
    assert (s.ttft_ms.mean, s.ttft_ms.p50, s.ttft_ms.p90, s.ttft_ms.p99) == (
        approx(200),
        approx(200),
        approx(280),  # linear: 100 + 0.9 * 200
        approx(298),
    )
    assert s.ttft_ms.count == 2
    # ITL pooled over requests: [100, 200] + [100] -> sorted [100, 100, 200]
    assert s.itl_ms.count == 3
    assert s.itl_ms.mean == approx(400 / 3)
    assert s.itl_ms.p50 == approx(100)
    assert s.itl_ms.p90 == approx(180)  # position 1.8 between 100 and 200
    assert s.itl_ms.p99 == approx(198)
    assert s.tpot_ms.mean == approx(125)  # 150 and 100
    assert s.tpot_ms.p50 == approx(125)
    assert s.e2e_ms.mean == approx(450)
    assert s.e2e_ms.p99 == approx(499)


def test_output_tokens_fall_back_to_chunk_tokens() -> None:
    r = slow()
    r.output_tokens = None  # no usage from the server: 1 + 2 streamed tokens
    s = summarize([r])
    assert s.generated_tokens_total == 3
    assert s.tpot_ms.mean == approx(100)


def test_one_token_has_no_tpot() -> None:
    r = RequestRecord(
        send_time=0.0, first_token_time=0.05, token_times=[0.05], end_time=0.05, output_tokens=1
    )
    s = summarize([r])
    assert s.tpot_ms.count == 0 and math.isnan(s.tpot_ms.p99)
    assert s.itl_ms.count == 0
    assert s.ttft_ms.mean == approx(50)


def test_goodput_is_per_request() -> None:
    records = [fast(), slow(), failed()]
    s = summarize(records, slo={"ttft_p99": 200})  # fast (100) meets it, slow (300) does not
    assert s.goodput_rps == approx(1 / 0.6)
    assert s.goodput_tok_s == approx(3 / 0.6)
    s = summarize(records, slo={"tpot_p99": 120})  # fast's TPOT is 150, slow's 100
    assert s.goodput_tok_s == approx(3 / 0.6)
    s = summarize(records, slo={"itl_p99": 120})  # an ITL limit is judged on the request's TPOT
    assert s.goodput_rps == approx(1 / 0.6)
    s = summarize(records, slo={"e2e_p99": 1000, "ttft_p99": 1000})
    assert s.goodput_rps == approx(2 / 0.6)
    assert math.isnan(summarize(records).goodput_rps)  # no SLO: no goodput


def test_no_records() -> None:
    s = summarize([])
    assert (s.completed, s.failed, s.duration_s) == (0, 0, 0.0)
    assert s.output_throughput_tok_s == 0.0
    assert math.isnan(s.ttft_ms.p50)
    assert s.failed_fraction == 1.0


def test_only_warmup_and_failures() -> None:
    s = summarize([warm(), failed(), failed()])
    assert (s.completed, s.failed) == (0, 2)
    assert s.duration_s == approx(0.05)
    assert s.output_throughput_tok_s == 0.0
    assert s.errors == {"HTTP 500: boom": 2}
    assert s.failed_fraction == 1.0


def test_failures_without_end_time_do_not_stretch_duration() -> None:
    lost = RequestRecord(send_time=0.3, error="connection reset")
    s = summarize([fast(), lost])
    assert s.duration_s == approx(0.4)
    assert s.failed == 1


def test_requests_cut_short_on_purpose_are_neither_completed_nor_failed() -> None:
    cut = RequestRecord(send_time=0.3, error="cancelled")
    s = summarize([fast(), cut], pruned="ttft_p99 settled over its limit")
    assert (s.completed, s.failed) == (1, 0)
    assert s.pruned == "ttft_p99 settled over its limit"
    assert Summary.from_dict(s.to_dict()).pruned == s.pruned


def test_each_slo_percentile_is_judged_with_its_interval() -> None:
    s = summarize([fast(), slow()], slo={"ttft_p99": 10_000, "itl_p50": 0.001})
    assert s.checks["ttft_p99"]["verdict"] == "uncertain"  # two samples: no upper bound for a p99
    assert s.checks["ttft_p99"]["high"] is None and not s.bounded
    assert s.checks["itl_p50"]["estimate"] == approx(s.itl_ms.p50)
    back = Summary.from_dict(s.to_dict())
    assert back.checks == s.checks and back.uncertain


def test_metric_names() -> None:
    s = summarize([fast(), slow()], slo={"ttft_p99": 200})
    assert s.metric("output_throughput") == s.output_throughput_tok_s
    assert s.metric("goodput") == s.goodput_tok_s
    assert s.metric("ttft_p99") == s.ttft_ms.p99
    assert s.metric("itl_p50") == s.itl_ms.p50
    assert s.metric("e2e_mean") == s.e2e_ms.mean
    for bad in ("ttft_p75", "latency_p99", "throughput"):
        with pytest.raises(KeyError):
            s.metric(bad)


def test_dict_round_trip() -> None:
    s = summarize([fast(), slow(), failed()], load={"concurrency": 4})
    d = s.to_dict()
    assert d["goodput_rps"] is None  # nan is written as null
    assert d["load"] == {"concurrency": 4}
    back = Summary.from_dict(d)
    assert back.to_dict() == d
    assert back.ttft_ms.p99 == s.ttft_ms.p99


def test_distribution_of_nothing() -> None:
    d = Distribution.of([])
    assert d.count == 0 and d.to_dict() == {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None}


def test_p95_sits_between_p90_and_p99_and_older_summaries_read_without_it() -> None:
    d = Distribution.of(list(range(101)))  # 0..100 ms: the q-th percentile is q
    assert (d.p50, d.p90, d.p95, d.p99) == (50.0, 90.0, 95.0, 99.0)
    assert list(d.to_dict()) == ["mean", "p50", "p90", "p95", "p99"]
    s = summarize([fast(), slow()])
    assert s.metric("ttft_p95") == s.ttft_ms.p95 and s.ttft_ms.p90 <= s.ttft_ms.p95 <= s.ttft_ms.p99
    stored = s.to_dict()
    del stored["ttft_ms"]["p95"]  # a summary stored before p95 was kept
    old = Summary.from_dict(stored)
    assert math.isnan(old.metric("ttft_p95")) and old.ttft_ms.p99 == s.ttft_ms.p99


def test_records_to_dicts() -> None:
    (d,) = records_to_dicts([fast()])
    assert d["token_times"] == [0.1, 0.2, 0.4] and d["error"] is None


def test_input_tokens_are_what_the_server_counted() -> None:
    s = summarize([fast(), slow(), RequestRecord(send_time=0.0, error="HTTP 500")])
    assert (s.input_tokens.count, s.input_tokens.p50, s.input_tokens.mean) == (2, approx(15.0), approx(15.0))
    back = Summary.from_dict(s.to_dict())
    assert back.input_tokens.count == 2 and back.input_tokens.p50 == approx(15.0)


def test_one_turn_traffic_has_no_per_turn_figures() -> None:
    s = summarize([fast(), slow()])
    assert s.turns == {} and "turns" not in s.to_dict()


def test_per_turn_figures_when_the_traffic_has_sessions() -> None:
    first = fast()  # TTFT 100, ITL 100 and 200
    second, third = slow(), slow()  # TTFT 300, ITL 100
    second.conversation, second.turn = 0, 1
    third.conversation, third.turn = 0, 2
    s = summarize([first, second, third])
    assert list(s.turns) == ["1", "2", "3", "later"]
    assert s.turns["1"]["count"] == 1 and s.turns["1"]["ttft_ms"]["p50"] == approx(100.0)
    assert s.turns["1"]["itl_ms"]["mean"] == approx(150.0)
    later = s.turns["later"]
    assert (
        later["count"] == 2
        and later["ttft_ms"]["p99"] == approx(300.0)
        and later["itl_ms"]["p50"] == approx(100.0)
    )
    assert s.ttft_ms.count == 3  # the overall figures are unchanged
    assert Summary.from_dict(s.to_dict()).turns == s.turns
