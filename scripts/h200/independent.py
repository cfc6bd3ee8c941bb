"""An independent check of tuner's SLO capacity: vLLM's own client (`vllm bench serve`) against the same
servers, at the load levels around the boundary tuner bracketed.

For the baseline and the best trial of a study (or the trials given with ``--trials``) it starts the
server with exactly the flags that trial ran with (its stored argv, on a fresh port), warms it up, and runs
``vllm bench serve --max-concurrency C`` at each level: the bracket's passing and failing concurrencies and
one below, ``--per-level`` x C requests each (at least 64). A level meets the SLO when every SLO percentile
``vllm bench serve`` reports is within its limit; the independent capacity is the output throughput of the
highest level that meets it. The table (markdown) and the raw results (JSON) go to ``--out``.

    python scripts/h200/independent.py studies/h200-llama8b-refined.yaml --storage sqlite:///DB --out DIR

Runs where the study ran (the H200 machine): it needs vLLM and the model. Stops starting work past
``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from tuner.config.spec import load_spec  # noqa: E402
from tuner.search.record import TrialRecord, read  # noqa: E402
from tuner.server.ports import free_port  # noqa: E402
from tuner.server.process import VllmServer  # noqa: E402

#: `vllm bench serve`'s percentile keys for tuner's SLO metric names
BENCH_KEY = {"ttft": "ttft", "itl": "itl", "tpot": "tpot", "e2e": "e2el"}


def serve_argv(rec: TrialRecord, port: int) -> list[str]:
    """The trial's stored argv with a new port (and the host kept)."""
    argv = list(rec.argv)
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(port)
    else:
        argv += ["--port", str(port)]
    return argv


def levels_of(rec: TrialRecord, below: bool = False) -> list[int]:
    """The bracket's passing and failing concurrencies (and, with ``below``, one under the passing one)."""
    cap = rec.result.capacity if rec.result is not None else {}
    bracket = (cap or {}).get("bracket") or {}
    passing, failing = bracket.get("passing"), bracket.get("failing")
    out = {int(x) for x in (passing, failing) if isinstance(x, int | float)}
    if below and isinstance(passing, int | float):
        out.add(max(1, round(passing * 0.85)))
    return sorted(out)


def bench(model: str, port: int, concurrency: int, n: int, spec: Any, out: Path, name: str) -> dict[str, Any]:
    """One `vllm bench serve` run; its saved JSON result."""
    w = spec.workload
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve",
        "--backend", "vllm", "--host", "127.0.0.1", "--port", str(port),
        "--model", model, "--tokenizer", w.tokenizer or model,
        "--dataset-name", "random", "--random-input-len", str(w.input_tokens),
        "--random-output-len", str(w.output_tokens), "--random-range-ratio", "0", "--ignore-eos",
        "--num-prompts", str(n), "--max-concurrency", str(concurrency), "--request-rate", "inf",
        "--seed", str(concurrency), "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99", "--save-result", "--result-dir", str(out),
        "--result-filename", f"{name}.json", "--disable-tqdm",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=400)
    return dict(json.loads((out / f"{name}.json").read_text()))


def verdicts(result: dict[str, Any], slo: dict[str, float]) -> dict[str, tuple[float | None, bool]]:
    """Each SLO limit: ``vllm bench serve``'s figure (ms) and whether it is within the limit."""
    out: dict[str, tuple[float | None, bool]] = {}
    for name, limit in slo.items():
        base, _, pct = name.partition("_")
        value = result.get(f"{pct}_{BENCH_KEY.get(base, base)}_ms")
        ok = isinstance(value, int | float) and value <= limit
        out[name] = (float(value) if isinstance(value, int | float) else None, ok)
    return out


def check(rec: TrialRecord, spec: Any, args: argparse.Namespace, t0: float) -> dict[str, Any]:
    """Start the trial's server, warm it up, bench each level; the rows and the independent capacity."""
    slo = spec.slo.limits()
    port = free_port()
    model = rec.argv[rec.argv.index("serve") + 1] if "serve" in rec.argv else str(spec.model)
    rows: list[dict[str, Any]] = []
    log = args.out / f"trial-{rec.number}.server.log"
    env = dict(spec.server.env)
    with VllmServer(serve_argv(rec, port), port=port, log_path=log, env=env, startup_timeout_s=600) as server:
        print(f"trial {rec.number}: started in {server.startup_s:.1f} s", flush=True)
        bench(model, port, 32, 64, spec, args.out, f"warmup-{rec.number}")
        for c in args.levels or levels_of(rec, args.below):
            if time.time() - t0 > args.deadline:
                print(f"trial {rec.number}: past the deadline, level {c} not run", flush=True)
                break
            n = max(64, args.per_level * c)
            r = bench(model, port, c, n, spec, args.out, f"trial-{rec.number}-c{c}")
            v = verdicts(r, slo)
            row = {
                "concurrency": c,
                "requests": n,
                "output_tok_s": r.get("output_throughput"),
                "meets": all(ok for _, ok in v.values()),
                **{k: fig for k, (fig, _) in v.items()},
            }
            rows.append(row)
            print(f"trial {rec.number}: {json.dumps(row)}", flush=True)
    passing = [r for r in rows if r["meets"]]
    best = max(passing, key=lambda r: r["concurrency"]) if passing else None
    return {
        "trial": rec.number,
        "is_baseline": rec.is_baseline,
        "tuner_capacity_tok_s": rec.values[0] if rec.values else None,
        "tuner_bracket": (rec.result.capacity or {}).get("bracket") if rec.result else None,
        "independent_capacity_tok_s": best["output_tok_s"] if best else None,
        "independent_level": best["concurrency"] if best else None,
        "rows": rows,
    }


def pick(study: optuna.Study, given: list[int] | None) -> list[TrialRecord]:
    """The given trials, else the baseline and the best feasible original trial by the first objective."""
    recs = [read(t) for t in study.get_trials(deepcopy=False)]
    if given:
        return [r for r in recs if r.number in given]
    done = [r for r in recs if r.values and r.feasible and r.repeat_of is None]
    base = [r for r in done if r.is_baseline][:1]
    best = max(done, key=lambda r: r.values[0] if r.values else 0.0, default=None)
    return base + ([best] if best is not None and best not in base else [])


def table(checks: list[dict[str, Any]]) -> str:
    lines = [
        "| trial | tuner: capacity tok/s (bracket) | vllm bench serve: capacity tok/s (level) | difference |",
        "|---|---|---|---|",
    ]
    for c in checks:
        b = c["tuner_bracket"] or {}
        t, i = c["tuner_capacity_tok_s"], c["independent_capacity_tok_s"]
        diff = f"{100 * (i - t) / t:+.1f} %" if t and i else "-"
        lines.append(
            f"| {c['trial']}{' (baseline)' if c['is_baseline'] else ''} | "
            f"{t:,.0f} ({b.get('passing')}-{b.get('failing')}) | "
            f"{'-' if i is None else f'{i:,.0f}'} ({c['independent_level']}) | {diff} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--storage", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--trials", type=int, nargs="*")
    ap.add_argument("--per-level", type=int, default=4, help="requests per level: this many x C")
    ap.add_argument("--deadline", type=float, default=480.0)
    ap.add_argument("--below", action="store_true", help="also a level 15 % under the passing one")
    ap.add_argument("--levels", type=int, nargs="*", help="these concurrencies instead of the bracket's")
    args = ap.parse_args(argv)
    t0 = time.time()
    spec = load_spec(args.study)
    args.out.mkdir(parents=True, exist_ok=True)
    study = optuna.load_study(study_name=spec.name, storage=args.storage)
    checks = [check(rec, spec, args, t0) for rec in pick(study, args.trials)]
    (args.out / "independent.json").write_text(json.dumps(checks, indent=1))
    text = table(checks)
    (args.out / "independent.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
