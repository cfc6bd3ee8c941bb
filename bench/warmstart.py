"""Warm start, controlled: does a (wrong) simulator's warm start save real trials?

    python bench/warmstart.py                # make bench-warmstart: every scenario, 20 seeds; docs/warmstart.md
    python bench/warmstart.py --quick        # 2 scenarios (QUICK), 4 seeds, 60 prior trials: a smoke run

The "world" is the simulator (each scenario of ``bench/scenarios.py`` and its exhaustive optimum, exactly as
``bench/search_efficiency.py`` computes them, under tuner's capacity rule). The "prior" is the simulator
with deliberately wrong constants (:data:`PRIORS`: efficiency constants off by 20-30 %, another memory
reserve), or the right one as a control. For each scenario and prior, tuner's own warm start runs
(:func:`tuner.search.prior.simulated_study` of ``--prior-trials`` trials on the prior, then
:func:`tuner.search.prior.top_distinct`, ``--top`` configurations); then ``--seeds`` real searches of 40
trials each as tuner runs a study with ``prior: {sim: true}``: vLLM's defaults first, the prior's picks
next, then tuner's TPE. Seed ``i`` uses wrong prior ``i mod 4`` (one prior study per scenario and prior,
seeded once: the seeds vary the search after the warm start). The cold search is the same without the
picks (``default (tuner tpe) + baseline`` of the search benchmark).

Reported: trials to reach 95 % of the world's optimum (median, worst decile, share within 15) per
scenario and pooled; the paired difference warm - cold per seed (the same TPE seed), and how often the warm
start made the study worse and by how much. Goals (issue 14): median trials halved; a wrong prior never
worse than cold by more than one trial at the median.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import optuna  # noqa: E402
from scenarios import SCENARIOS, Scenario  # noqa: E402
from search_efficiency import (  # noqa: E402
    K_MAX,
    Outcome,
    Point,
    _optimum,
    _pct,
    baseline_params,
    trials_to,
    write_doc,
)

from tuner.config.space import suggest_from  # noqa: E402
from tuner.search.prior import simulated_study, top_distinct  # noqa: E402
from tuner.search.samplers import make_sampler  # noqa: E402
from tuner.sim.args import config_from_flags  # noqa: E402
from tuner.sim.hardware import get_hardware  # noqa: E402
from tuner.sim.predict import Prediction, perturbed, predict  # noqa: E402

DOC = ROOT / "docs" / "warmstart.md"
START, END = "<!-- warmstart:start -->", "<!-- warmstart:end -->"
QUICK = ("chat-h100", "h200-llama8b")
METRIC = "output_throughput"

#: the priors: efficiency constants scaled (``tuner.sim.hardware.Efficiency`` names) and GiB added to the
#: memory reserve; "right" is the world itself (the control)
PRIORS: dict[str, tuple[dict[str, float], float]] = {
    "right": ({}, 0.0),
    "fast-gpu": ({"gemm": 1.25, "attention": 1.3, "memory": 1.2}, -0.5),
    "slow-gpu": ({"gemm": 0.75, "attention": 0.7, "memory": 0.8}, 4.0),
    "slow-host": ({"step_s": 1.3, "per_seq_s": 1.3, "mixed_step_s": 0.7, "memory": 0.8}, 2.0),
    "fast-host": ({"step_s": 0.7, "per_seq_s": 0.7, "mixed_step_s": 1.3, "gemm": 1.2}, -0.5),
}
WRONG = [k for k in PRIORS if k != "right"]


def prior_predict(sc: Scenario, prior: str, params: dict[str, object]) -> Prediction:
    """The prior's prediction at the grid point ``params`` snap to (tuner.sim.predict on the wrong profile)."""
    scale, reserve = PRIORS[prior]
    hw = perturbed(get_hardware(sc.hardware), scale=scale, reserve_gib=reserve)
    cfg = config_from_flags(sc.model, sc.flags(sc.snap(params)), sc.hardware)
    return predict(dataclasses.replace(cfg, hw=hw), sc.workload, sc.slo, sc.capacity)


def _prior_picks(task: tuple[str, str, int, int, int]) -> tuple[str, str, list[Point], float]:
    """One warm start: the prior's top distinct grid points (and the seconds it took)."""
    sc_name, prior, n_trials, top, seed = task
    sc = next(s for s in SCENARIOS if s.name == sc_name)
    t0 = time.monotonic()
    results = simulated_study(
        sc.space,
        lambda p: prior_predict(sc, prior, p),
        metric=METRIC,
        direction="maximize",
        slo=sc.slo,
        n_trials=n_trials,
        seed=seed,
    )
    snapped = [
        ({p.name: v for p, v in zip(sc.params, sc.snap(params), strict=True)}, r) for params, r in results
    ]
    picks = top_distinct(snapped, top, metric=METRIC, direction="maximize")
    return sc_name, prior, [sc.snap(p) for p, _ in picks], time.monotonic() - t0


_TABLES: dict[str, dict[Point, Outcome]] = {}
_OPT: dict[str, float] = {}
_PICKS: dict[tuple[str, str], list[Point]] = {}


def _search(task: tuple[str, str, int]) -> tuple[str, str, int, list[float]]:
    """One real search (the world's table): baseline, the prior's picks (prior ``"cold"``: none), TPE."""
    sc_name, prior, seed = task
    sc = next(s for s in SCENARIOS if s.name == sc_name)
    table, opt = _TABLES[sc_name], _OPT[sc_name]
    best = 0.0
    curve: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        values = {name: suggest_from(trial, name, d) for name, d in sc.space.items()}
        o = table[sc.snap(values)]
        for k, v in o.constraints.items():
            trial.set_constraint(k, v)
        return o.score

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal best
        o = table[sc.snap(trial.params)]
        if o.feasible:
            best = max(best, o.score)
        curve.append(best / opt)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = make_sampler("tpe", seed=seed, n_objectives=1, constraints_func=None, search_space=sc.space)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial(baseline_params(sc))
        for pt in _PICKS.get((sc_name, prior), []):
            study.enqueue_trial({p.name: v for p, v in zip(sc.params, pt, strict=True)})
        study.optimize(objective, n_trials=K_MAX, callbacks=[record])
    return sc_name, prior, seed, curve


def _init(
    tables: dict[str, dict[Point, Outcome]], opt: dict[str, float], picks: dict[tuple[str, str], list[Point]]
) -> None:
    _TABLES.update(tables)
    _OPT.update(opt)
    _PICKS.update(picks)


def _map(fn, tasks, procs: int):  # type: ignore[no-untyped-def]
    if procs > 1:
        with mp.get_context("fork").Pool(procs) as pool:
            return list(pool.imap_unordered(fn, tasks, chunksize=1))
    return [fn(t) for t in tasks]


def _fmt(x: float) -> str:
    return f">{K_MAX}" if not math.isfinite(x) else f"{x:.0f}"


def report(
    curves: dict[tuple[str, str, int], list[float]],
    picks: dict[tuple[str, str], list[Point]],
    prior_s: dict[tuple[str, str], float],
    optimum: dict[str, float],
    scenarios: Sequence[Scenario],
    args: argparse.Namespace,
    elapsed: float,
) -> list[str]:
    """The tables and goal lines of docs/warmstart.md."""
    arms = ("cold", "warm, right prior", "warm, wrong prior")

    def tt(sc: str, arm: str) -> dict[int, float]:
        out = {}
        for (name, prior, seed), c in curves.items():
            if name != sc:
                continue
            kind = (
                "cold"
                if prior == "cold"
                else ("warm, right prior" if prior == "right" else "warm, wrong prior")
            )
            if kind == arm:
                out[seed] = trials_to(c)
        return out

    lines = [
        f"Priors: {', '.join(f'{k} ({_describe(k)})' for k in PRIORS)}. {args.prior_trials} simulated trials "
        f"each, top {args.top}; {args.seeds} seeds a scenario (wrong prior of seed i: {', '.join(WRONG)}[i mod "
        f"{len(WRONG)}]).",
        "",
        "| scenario | prior's first pick reaches (right / wrong priors) | cold: median / worst 10% / <=15 | "
        "warm right: median / worst 10% / <=15 | warm wrong: median / worst 10% / <=15 | wrong - cold per seed: "
        "median / worse by >1 |",
        "|---|---|---|---|---|---|",
    ]
    pooled: dict[str, list[float]] = {a: [] for a in arms}
    diffs: list[float] = []
    for sc in scenarios:
        table = _TABLES[sc.name]
        first = []
        for k in PRIORS:
            pts = picks.get((sc.name, k)) or []
            o = table.get(pts[0]) if pts else None
            first.append(f"{(o.score / optimum[sc.name] if o is not None and o.feasible else 0):.0%}")
        cols = []
        per = {a: tt(sc.name, a) for a in arms}
        for a in arms:
            v = list(per[a].values())
            pooled[a] += v
            cols.append(f"{_fmt(_pct(v, 50))} / {_fmt(_pct(v, 90))} / {np.mean([x <= 15 for x in v]):.0%}")
        d = [
            _cap(per["warm, wrong prior"][s]) - _cap(per["cold"][s])
            for s in per["cold"]
            if s in per["warm, wrong prior"]
        ]
        diffs += d
        lines.append(
            f"| {sc.name} | {first[0]} / {' '.join(first[1:])} | "
            + " | ".join(cols)
            + f" | {np.median(d):+.0f} / {np.mean([x > 1 for x in d]):.0%} |"
        )
    lines += ["", "Pooled (trials to 95 % of the optimum; a search that never got there counts as 41):", ""]
    lines += ["| arm | searches | median | worst 10% | mean | share within 15 |", "|---|---|---|---|---|---|"]
    for a in arms:
        v = pooled[a]
        lines.append(
            f"| {a} | {len(v)} | {_fmt(_pct(v, 50))} | {_fmt(_pct(v, 90))} | {np.mean([_cap(x) for x in v]):.1f} "
            f"| {np.mean([x <= 15 for x in v]):.0%} |"
        )
    mc, mr, mw = (_pct(pooled[a], 50) for a in arms)
    worse = float(np.mean([x > 1 for x in diffs])) if diffs else math.nan
    lines += [
        "",
        f"Goal 1 (warm start needs half the trials or fewer, median): cold {_fmt(mc)}, warm with the right prior "
        f"{_fmt(mr)}, with a wrong prior {_fmt(mw)} -> {'met' if mw <= mc / 2 else 'NOT met'} with a wrong "
        f"prior, {'met' if mr <= mc / 2 else 'NOT met'} with the right one.",
        f"Goal 2 (a wrong prior never worse than cold by more than one trial at the median): median paired "
        f"difference {np.median(diffs):+.0f} trial(s) -> {'met' if np.median(diffs) <= 1 else 'NOT met'}; "
        f"worse by more than one trial in {worse:.0%} of {len(diffs)} paired searches, better by more than one in "
        f"{np.mean([x < -1 for x in diffs]):.0%}.",
        "",
        f"Prior run time (simulated study + picks), median {np.median(list(prior_s.values())):.0f} s, max "
        f"{max(prior_s.values()):.0f} s per scenario and prior. Wall time {elapsed:.0f} s on {args.procs} processes "
        f"({os.cpu_count()} cores).",
    ]
    return lines


def _cap(x: float) -> float:
    return min(x, K_MAX + 1)


def _describe(prior: str) -> str:
    scale, reserve = PRIORS[prior]
    parts = [f"{k} x{v:g}" for k, v in scale.items()] + ([f"reserve {reserve:+g} GiB"] if reserve else [])
    return ", ".join(parts) or "the world's constants"


ERR_START, ERR_END = "<!-- h200-errors:start -->", "<!-- h200-errors:end -->"
ERR_METRICS = ("output_throughput", "ttft_p99", "itl_p99", "tpot_p99", "e2e_p99")


def error_table(db: str, study_file: str, model: str | None, hardware: str | None) -> list[str]:
    """The simulator's prediction for each finished trial of a stored study (read-only) against its
    measurement: one row a trial, then the median absolute error per metric."""
    from tuner.config.spec import load_spec
    from tuner.search.prior import measured_metrics, prediction_errors, sim_target
    from tuner.search.record import read

    spec = load_spec(study_file)
    if model:
        spec = spec.model_copy(update={"model": model})
    target = sim_target(spec, hardware)
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(db).resolve()}")
    study = optuna.load_study(study_name=spec.name, storage=storage)
    head = "| trial | config | measured status | predicted | " + " | ".join(
        f"{m} meas / pred / err" for m in ERR_METRICS
    )
    lines = [head + " |", "|---|---|---|---|" + "---|" * len(ERR_METRICS)]
    errs: dict[str, list[float]] = {m: [] for m in ERR_METRICS}
    for t in study.get_trials(deepcopy=False):
        rec = read(t)
        if not rec.finished:
            continue
        params = dict(rec.baseline_flags or {}) if rec.is_baseline else dict(rec.run_params)
        pred = target.predict(params)
        meas = measured_metrics(rec.result.metrics if rec.result and not rec.failed else None)
        e = prediction_errors(pred, meas)
        cells = []
        for m in ERR_METRICS:
            if m in e:
                errs[m].append(abs(e[m]))
            mv, pv = meas.get(m), pred.metrics.get(m)
            cells.append(f"{_num(mv)} / {_num(pv)} / {f'{e[m]:+.0%}' if m in e else '-'}")
        cfg = (
            "baseline (vLLM defaults)"
            if rec.is_baseline
            else ", ".join(f"{k}={_num(v)}" for k, v in params.items())
        )
        said = "feasible" if pred.feasible else (pred.failure or "infeasible")
        lines.append(f"| {t.number} | {cfg} | {rec.status} | {said} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Median absolute error over the measured trials: "
        + ", ".join(f"{m} {np.median(v):.0%} (max {max(v):.0%}, n={len(v)})" for m, v in errs.items() if v)
        + f". Simulator profile {target.hardware.name}, model shape {spec.model}.",
    ]
    return lines


def _num(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return "-" if v is None else str(v)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-base", type=int, default=2000)
    ap.add_argument("--prior-trials", type=int, default=300)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--scenarios", nargs="*", default=None)
    ap.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--quick", action="store_true", help="2 scenarios, 4 seeds, 60 prior trials; no doc update"
    )
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--errors", metavar="DB", help="only the predicted-vs-measured table of a stored study")
    ap.add_argument("--study-file", help="with --errors: the study's file")
    ap.add_argument("--model", help="with --errors: the model shape to simulate (a built-in name)")
    ap.add_argument("--hardware", help="with --errors: the simulator's profile")
    args = ap.parse_args(argv)
    if args.errors:
        lines = error_table(args.errors, args.study_file, args.model, args.hardware)
        print("\n".join(lines))
        if not args.no_write:
            write_doc(
                lines, DOC, markers=(ERR_START, ERR_END), title="Warm start", section="Predicted vs measured"
            )
        return 0
    if args.quick:
        args.seeds, args.prior_trials = 4, 60
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    t0 = time.monotonic()
    names = args.scenarios or ([*QUICK] if args.quick else [s.name for s in SCENARIOS])
    scenarios = [s for s in SCENARIOS if s.name in names]

    tables: dict[str, dict[Point, Outcome]] = {}
    optimum: dict[str, float] = {}
    for sc in scenarios:
        found = _optimum(sc, args.procs, t0)
        if found is None:
            print(f"{sc.name}: no feasible configuration on the grid", file=sys.stderr)
            return 1
        tables[sc.name], optimum[sc.name] = found[0], found[1].score
    tasks = [(sc.name, k, args.prior_trials, args.top, i) for sc in scenarios for i, k in enumerate(PRIORS)]
    picks: dict[tuple[str, str], list[Point]] = {}
    prior_s: dict[tuple[str, str], float] = {}
    for name, prior, pts, took in _map(_prior_picks, tasks, args.procs):
        picks[(name, prior)], prior_s[(name, prior)] = pts, took
    print(f"[{time.monotonic() - t0:5.0f}s] priors done ({len(tasks)})", flush=True)

    _init(tables, optimum, picks)
    seeds = [args.seed_base + i for i in range(args.seeds)]
    search_tasks = [(sc.name, arm, s) for sc in scenarios for s in seeds for arm in ("cold", "right")]
    search_tasks += [(sc.name, WRONG[i % len(WRONG)], s) for sc in scenarios for i, s in enumerate(seeds)]
    curves = {(n, p, s): c for n, p, s, c in _map(_search, search_tasks, args.procs)}
    print(f"[{time.monotonic() - t0:5.0f}s] searches done ({len(search_tasks)})", flush=True)

    lines = report(curves, picks, prior_s, optimum, scenarios, args, time.monotonic() - t0)
    print("\n".join(lines))
    if not args.quick and not args.no_write:
        write_doc(lines, DOC, markers=(START, END), title="Warm start", section="Controlled benchmark")
        print(f"\nwritten: {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
