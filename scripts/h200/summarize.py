"""Print the per-trial table of a study database, GPU runs' extras included (telemetry, server-side view,
memory check against vLLM's own KV size, start times, trials per hour).

    python scripts/h200/summarize.py results/h200/h200-llama8b.db [STUDY_NAME]

Reads only what tuner stored as Optuna user attributes; writes nothing.
"""

from __future__ import annotations

import ast
import json
import statistics
import sys
from typing import Any

import optuna


def result_of(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    r = t.user_attrs.get("result")
    if isinstance(r, dict):
        return r
    if isinstance(r, str):
        try:
            return dict(json.loads(r))
        except ValueError:
            return dict(ast.literal_eval(r))
    return {}


def main(argv: list[str]) -> int:
    db = argv[1]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{db}"
    name = argv[2] if len(argv) > 2 else optuna.get_all_study_summaries(storage)[0].study_name
    study = optuna.load_study(study_name=name, storage=storage)
    rows = []
    starts, durations, agree, kv_err = [], [], 0, []
    base = None
    for t in study.trials:
        r = result_of(t)
        if not r:
            continue
        m = r.get("metrics") or {}
        g = r.get("gpu") or {}
        view = (r.get("server_metrics") or {}).get("view") or {}
        mc = r.get("memory_check") or {}
        tput = m.get("output_throughput_tok_s")
        if t.user_attrs.get("is_baseline"):
            base = tput
        if r.get("startup_s"):
            starts.append(r["startup_s"])
        if r.get("ended_at") and r.get("started_at"):
            durations.append(r["ended_at"] - r["started_at"])
        if mc:
            launched_ok = r.get("status") not in ("oom",) or "predicted" not in (r.get("message") or "")
            agree += int(bool(mc.get("fits")) == launched_ok and (r.get("status") != "oom"))
            if mc.get("kv_tokens_estimate") and view.get("kv_cache_tokens"):
                kv_err.append(mc["kv_tokens_estimate"] / view["kv_cache_tokens"] - 1)
        steps = r.get("steps") or []
        rows.append(
            [
                str(t.number) + (" (baseline)" if t.user_attrs.get("is_baseline") else ""),
                " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
                or "-",
                r.get("status", "?"),
                _f(r.get("startup_s"), 1),
                _f((r.get("ended_at") or 0) - (r.get("started_at") or 0), 0),
                _f(tput, 0),
                "" if base is None or tput is None else f"{(tput / base - 1) * 100:+.1f}%",
                _f((m.get("ttft_ms") or {}).get("p99"), 0),
                _f((m.get("itl_ms") or {}).get("p99"), 1),
                str(len(steps)),
                r.get("bottleneck") or "",
                _f((g.get("util_pct") or {}).get("mean"), 0),
                _f((g.get("power_w") or {}).get("mean"), 0),
                _f(view.get("kv_cache_usage_max"), 2),
                str(mc.get("kv_tokens_estimate", "")),
                str(view.get("kv_cache_tokens", "")),
            ]
        )
    head = [
        "trial", "params", "status", "start s", "trial s", "goodput cap tok/s", "vs base", "TTFT p99 ms",
        "ITL p99 ms", "steps", "bottleneck", "GPU util %", "power W", "KV max", "KV tok predicted", "KV tok vLLM",
    ]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if durations:
        print(f"\ntrials: {len(durations)}, mean trial {statistics.mean(durations):.0f} s "
              f"({3600 / statistics.mean(durations):.1f} trials per hour of trial time)")  # fmt: skip
    if starts:
        print(f"server start: mean {statistics.mean(starts):.1f} s, min {min(starts):.1f} s, max {max(starts):.1f} s "
              f"({statistics.mean(starts) / statistics.mean(durations) * 100:.0f}% of a trial)")  # fmt: skip
    if kv_err:
        print(f"memory check: {agree} of {len(rows)} trials agreed with vLLM (fit predicted and started, or refused); "
              f"predicted KV tokens vs vLLM's: {min(kv_err) * 100:+.2f}% .. {max(kv_err) * 100:+.2f}%")  # fmt: skip
    return 0


def _f(v: Any, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
