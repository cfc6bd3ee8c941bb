"""The pruning rule: a step's verdict is settled once enough samples are known to exceed a limit."""

from __future__ import annotations

from tuner.load.records import RequestRecord
from tuner.measure.watch import StepWatch


def done(send: float, first: float, ends: float, gaps: list[float] | None = None) -> RequestRecord:
    times = [first]
    for g in gaps or []:
        times.append(times[-1] + g)
    return RequestRecord(send_time=send, first_token_time=first, token_times=times, end_time=ends)


def waiting(send: float) -> RequestRecord:
    return RequestRecord(send_time=send)


def test_ttft_p99_settles_once_four_of_300_exceed() -> None:
    watch = StepWatch({"ttft_p99": 1000.0}, planned_requests=300, max_output_tokens=16)
    fast = [done(0.0, 0.2, 1.0) for _ in range(50)]
    slow = [done(0.0, 1.5, 2.0) for _ in range(3)]
    assert watch.settled(fast + slow, now=2.0) is None
    reason = watch.settled([*fast, *slow, done(0.0, 1.2, 2.0)], now=2.0)
    assert reason is not None and reason.startswith("ttft_p99 settled over 1000 ms: 4 of 300")


def test_requests_still_waiting_past_the_limit_count() -> None:
    watch = StepWatch({"ttft_p99": 1000.0}, planned_requests=300, max_output_tokens=16)
    stuck = [waiting(send=0.0) for _ in range(4)]
    assert watch.settled(stuck, now=0.9) is None  # not yet over the limit
    assert watch.settled(stuck, now=1.1) is not None
    assert watch.reason is not None and watch.settled([], now=0.0) == watch.reason  # stays settled


def test_itl_counts_finished_and_open_gaps_incrementally() -> None:
    watch = StepWatch({"itl_p99": 50.0}, planned_requests=10, max_output_tokens=11)  # 100 gaps planned
    assert watch.active
    long_gaps = done(0.0, 0.1, 1.0, gaps=[0.01, 0.2, 0.01])  # one gap over 50 ms
    assert watch.settled([long_gaps], now=1.0) is None
    assert watch.settled([long_gaps], now=1.0) is None  # counted once, not again
    in_flight = RequestRecord(send_time=0.0, first_token_time=0.1, token_times=[0.1, 0.12])
    # 100 planned gaps: the p99 is settled once 100 - floor(0.99 * 99) = 2 are known to exceed
    assert watch.settled([long_gaps, in_flight], now=0.15) is None  # its open gap: 30 ms so far
    assert watch.settled([long_gaps, in_flight], now=0.2) is not None  # 80 ms: the second long gap


def test_failed_requests_and_other_limits_do_not_prune() -> None:
    watch = StepWatch({"ttft_p99": 100.0, "tpot_p99": 1.0, "goodput": 5.0}, 10, 8)
    failed = RequestRecord(send_time=0.0, error="HTTP 500")
    assert watch.settled([failed] * 10, now=100.0) is None
    assert not StepWatch({"tpot_p99": 1.0}, 10, 8).active
    assert not StepWatch({"ttft_p99": 1.0}, 0, 8).active


def test_e2e_limits_count_unfinished_requests_too() -> None:
    watch = StepWatch({"e2e_p50": 1000.0}, planned_requests=4, max_output_tokens=8)
    # p50 of 4: settled once 4 - floor(0.5 * 3) = 3 exceed
    recs = [RequestRecord(send_time=0.0, first_token_time=0.1, token_times=[0.1]) for _ in range(3)]
    assert watch.settled(recs, now=0.9) is None
    assert watch.settled(recs, now=1.01) is not None


def test_a_trial_of_only_cut_steps_broke_the_slo_not_its_requests() -> None:
    from tuner.measure.metrics import summarize
    from tuner.measure.trial import _load_errors

    cut = summarize([RequestRecord(send_time=0.0, error="cancelled")], {"ttft_p99": 1.0}, pruned="settled")
    assert cut.completed == 0 and _load_errors([cut, cut], 0.05) is None
    failing = summarize([RequestRecord(send_time=0.0, error="HTTP 500")], {"ttft_p99": 1.0})
    failure = _load_errors([cut, failing], 0.05)
    assert failure is not None and failure.status == "load_errors" and "HTTP 500" in failure.message


def test_itl_planned_gaps_use_each_requests_expected_length() -> None:
    """Two short requests (3 tokens: 2 gaps each) issued of 2 planned: 4 gaps planned, not 2 x 99; with a
    bound of 100 output tokens three long gaps would not settle a p50, with the requests' own lengths they do."""
    watch = StepWatch({"itl_p50": 50.0}, planned_requests=2, max_output_tokens=100)
    a = done(0.0, 0.1, 1.0, gaps=[0.2, 0.2])
    b = done(0.0, 0.1, 1.0, gaps=[0.2, 0.01])
    for r in (a, b):
        r.expected_output_tokens = 3
    assert watch.settled([a], now=1.0) is None  # b not issued yet: up to 99 more gaps
    reason = watch.settled([a, b], now=1.0)
    assert reason is not None and "3 of 4" in reason
