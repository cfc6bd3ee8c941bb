"""What was sent: the traffic summary a trial stored beside what it measured, in one line. Pure but for
reading a stored trial.

The summary is the load generator's (``TrialResult.traffic``: kind, conversations, requests, token
percentiles, arrivals, dropped, digest); a trial from a tuner before it has none. It is read through the
record module (:mod:`tuner.search.record`); each field is optional here, so any version reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from optuna.trial import FrozenTrial

from tuner.report.fmt import fmt_num
from tuner.search.record import read


def stored_traffic(trial: FrozenTrial) -> dict[str, Any] | None:
    """The traffic summary stored with ``trial`` (:attr:`tuner.search.record.StoredResult.traffic`), or
    None."""
    result = read(trial).result
    return dict(result.traffic) if result is not None and result.traffic else None


def study_traffic(trials: Iterable[FrozenTrial]) -> dict[str, Any] | None:
    """The traffic of the latest finished trial that stored one (every trial of a study sends the same)."""
    found = None
    for t in trials:
        found = stored_traffic(t) or found
    return found


def _tokens(what: str, v: Any) -> str | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f"{what} {fmt_num(v)} tokens"
    if isinstance(v, Mapping):
        parts = [f"{p} {fmt_num(v[p])}" for p in ("p50", "p90", "p99") if isinstance(v.get(p), int | float)]
        if parts:
            return (
                f"{what} tokens "
                + "/".join(p.split()[0] for p in parts)
                + " "
                + "/".join(p.split()[1] for p in parts)
            )
    return None


def describe_traffic(traffic: Mapping[str, Any] | None) -> str:
    """``sent: sharegpt, 1,200 requests in 400 conversations, input tokens p50/p90/p99 210/870/1900, output
    tokens p50/p90/p99 180/420/600, poisson arrivals, 3 dropped (digest 1a2b3c4d5e6f)``; "" without one."""
    if not traffic:
        return ""
    parts = [str(traffic.get("kind") or "traffic")]
    requests, conversations = traffic.get("requests"), traffic.get("conversations")
    if isinstance(requests, int):
        text = f"{requests:,} requests"
        if isinstance(conversations, int) and conversations != requests:
            text += f" in {conversations:,} conversations"
        parts.append(text)
    for what in ("input", "output"):
        line = _tokens(what, traffic.get(f"{what}_tokens"))
        if line:
            parts.append(line)
    arrivals = traffic.get("arrivals")
    if isinstance(arrivals, Mapping):
        arrivals = arrivals.get("kind")
    if isinstance(arrivals, str) and arrivals:
        parts.append(f"{arrivals} arrivals")
    dropped = traffic.get("dropped")
    if isinstance(dropped, int) and dropped:
        parts.append(f"{dropped:,} dropped")
    digest = traffic.get("digest")
    tail = f" (digest {digest[:12]})" if isinstance(digest, str) and digest else ""
    return "sent: " + ", ".join(parts) + tail
