"""Print the per-trial table of a study database, GPU runs' extras included (telemetry, server-side view,
memory check against vLLM's own KV size, start times, trials per hour, compile key cached or new).

    python scripts/h200/summarize.py results/h200/h200-llama8b.db [STUDY_NAME] [--steps]

``--steps`` adds every capacity step of every trial (load, throughput, goodput, TTFT and ITL p99).

Reads only what tuner stored, through :mod:`tuner.search.record`; writes nothing. The ``key`` column is the trial's
``compile_key`` record (``cached``: an earlier trial had started a healthy server with the same compile key
in the same vLLM cache; ``new``; ``-``: not recorded, by a tuner before compile keys). For a study without those
records the footer also gives a retro-computed split: a trial whose :data:`RETRO_KEY` params equal an
earlier healthy trial's counts as a repeat.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.report.status import summarize_starts
from tuner.search.record import StoredResult, TrialRecord, read, study_launches
from tuner.search.restart_cost import Launch

#: the searched flags of results/h200's studies that are in vLLM's compile key (gpu-memory-utilization is not)
RETRO_KEY = ("max-num-seqs", "max-num-batched-tokens", "block-size", "quantization")


def main(argv: list[str]) -> int:
    show_steps = "--steps" in argv
    argv = [a for a in argv if a != "--steps"]
    db = argv[1]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{db}"
    name = argv[2] if len(argv) > 2 else optuna.get_all_study_summaries(storage)[0].study_name
    study = optuna.load_study(study_name=name, storage=storage)
    rows = []
    starts, durations, agree, kv_err = [], [], 0, []
    base = None
    for t in study.trials:
        rec = read(t)
        r = rec.result
        if r is None:
            continue
        m = r.metrics or {}
        g = r.gpu
        view = r.server_metrics.get("view") or {}
        mc = r.memory_check
        tput = m.get("output_throughput_tok_s")
        if rec.is_baseline:
            base = tput
        if r.startup_s:
            starts.append(r.startup_s)
        if rec.ended_at and rec.started_at and not rec.refused_before_launch:  # no server: no trial time
            durations.append(rec.ended_at - rec.started_at)
        if mc:
            launched_ok = rec.status not in ("oom",) or "predicted" not in (rec.message or "")
            agree += int(bool(mc.get("fits")) == launched_ok and (rec.status != "oom"))
            if mc.get("kv_tokens_estimate") and view.get("kv_cache_tokens"):
                kv_err.append(mc["kv_tokens_estimate"] / view["kv_cache_tokens"] - 1)
        rows.append(
            [
                str(t.number) + (" (baseline)" if rec.is_baseline else ""),
                " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
                or "-",
                rec.status or "?",
                "-" if rec.feasible is None or rec.status != "ok" else ("met" if rec.feasible else "broken"),
                key_word(rec),
                _f(r.startup_s, 1),
                _f((rec.ended_at or 0) - (rec.started_at or 0), 0),
                _f(tput, 0),
                "" if base is None or tput is None else f"{(tput / base - 1) * 100:+.1f}%",
                _f((m.get("ttft_ms") or {}).get("p99"), 0),
                _f((m.get("itl_ms") or {}).get("p99"), 1),
                str(len(r.steps)),
                r.bottleneck or "",
                _f((g.get("util_pct") or {}).get("mean"), 0),
                _f((g.get("power_w") or {}).get("mean"), 0),
                _f(view.get("kv_cache_usage_max"), 2),
                str(mc.get("kv_tokens_estimate", "")),
                str(view.get("kv_cache_tokens", "")),
            ]
        )
    head = [
        "trial", "params", "status", "SLO", "key", "start s", "trial s", "goodput cap tok/s", "vs base", "TTFT p99 ms",
        "ITL p99 ms", "steps", "bottleneck", "GPU util %", "power W", "KV max", "KV tok predicted", "KV tok vLLM",
    ]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if durations:
        print(f"\ntrials that started a server: {len(durations)}, mean trial {statistics.mean(durations):.0f} s "
              f"({3600 / statistics.mean(durations):.1f} trials per hour of trial time)")  # fmt: skip
    if starts:
        print(f"server start: mean {statistics.mean(starts):.1f} s, min {min(starts):.1f} s, max {max(starts):.1f} s "
              f"({statistics.mean(starts) / statistics.mean(durations) * 100:.0f}% of a trial)")  # fmt: skip
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    recorded = study_launches(complete)
    if recorded:
        print(f"server starts by compile key: {summarize_starts(recorded).describe()}")
    else:
        print("server starts by compile key: not recorded (trials of a tuner before compile keys)")
        print(f"server starts, retro (same {', '.join(RETRO_KEY)} as an earlier healthy trial): "
              f"{summarize_starts(retro_launches(complete)).describe('repeating a key')}")  # fmt: skip
    if kv_err:
        print(f"memory check: {agree} of {len(rows)} trials agreed with vLLM (fit predicted and started, or refused); "
              f"predicted KV tokens vs vLLM's: {min(kv_err) * 100:+.2f}% .. {max(kv_err) * 100:+.2f}%")  # fmt: skip
    if show_steps:
        print_steps(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return 0


def key_word(rec: TrialRecord) -> str:
    """``cached`` / ``new`` from the trial's compile-key record, ``-`` without one."""
    if rec.compile_key is None:
        return "-"
    return "cached" if rec.compile_key.cached else "new"


def print_steps(trials: list[FrozenTrial]) -> None:
    """Every capacity step of every trial (the load, output and goodput throughput, TTFT and ITL p99, the
    step's duration, and why it was cut short), then per trial the bracket, the load seconds and what the
    steps cut short would have cost at full length."""
    head = [
        "trial",
        "step",
        "load",
        "output tok/s",
        "goodput tok/s",
        "TTFT p99 ms",
        "ITL p99 ms",
        "s",
        "cut short",
    ]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for t in sorted(trials, key=lambda t: t.number):
        for i, step in enumerate((read(t).result or StoredResult()).steps):
            load = ", ".join(f"{k} {v}" for k, v in (step.get("load") or {}).items())
            cells = [
                str(t.number),
                str(i),
                load or "-",
                _f(step.get("output_throughput_tok_s"), 0),
                _f(step.get("goodput_tok_s"), 0),
                _f((step.get("ttft_ms") or {}).get("p99"), 0),
                _f((step.get("itl_ms") or {}).get("p99"), 1),
                _f(step.get("duration_s"), 1),
                str(step.get("pruned") or ""),
            ]
            print("| " + " | ".join(cells) + " |")
    print_capacity(trials)


def print_capacity(trials: list[FrozenTrial]) -> None:
    """Per trial: levels, bracket, load seconds measured, and an estimate without pruning: each step cut
    short counted at full length, its planned requests at the request rate of the trial's highest full step
    (a lower bound: a step over the SLO serves no faster)."""
    head = [
        "trial",
        "levels",
        "bracket",
        "within",
        "load s",
        "steps cut short",
        "load s without pruning (est.)",
    ]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for t in sorted(trials, key=lambda t: t.number):
        res = read(t).result
        cap = dict(res.capacity) if res is not None else {}
        if not cap:
            continue
        steps = list(res.steps) if res is not None else []
        full = [s for s in steps if not s.get("pruned")]
        cut = [s for s in steps if s.get("pruned")]
        rps = max((float(s.get("request_throughput_rps") or 0.0) for s in full), default=0.0)
        load_s = float(cap.get("load_s") or 0.0)
        full_s = sum(float(s.get("duration_s") or 0.0) for s in full)
        planned = sum(int((s.get("load") or {}).get("requests") or 0) for s in cut)
        estimate = full_s + planned / rps if rps > 0 else float("nan")
        b = cap.get("bracket") or {}
        levels = " ".join(f"{lv:g}" for lv in cap.get("levels") or [])
        cells = [
            str(t.number),
            levels,
            f"{b.get('passing')}-{b.get('failing')}",
            str(b.get("within")),
            f"{load_s:.1f}",
            f"{len(cut)} ({load_s - full_s:.1f} s)",
            f"{estimate:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")


def retro_launches(trials: list[FrozenTrial]) -> list[Launch]:
    """Server starts retro-computed from the :data:`RETRO_KEY` params, for trials of a tuner before compile
    keys: a trial repeats a key when an earlier trial with the same values started a healthy server."""
    out = []
    healthy: set[tuple[Any, ...]] = set()
    for t in sorted(trials, key=lambda t: t.number):
        key = tuple(t.params.get(k) for k in RETRO_KEY)  # the baseline (no params) matches no trial
        rec = read(t)
        start = rec.result.startup_s if rec.result else None
        start = start if start is not None and start > 0 else None
        out.append(
            Launch(key=repr(key), cache=None, cached=key in healthy, startup_s=start, trial_s=rec.seconds)
        )
        if start is not None:
            healthy.add(key)
    return out


def _f(v: Any, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
