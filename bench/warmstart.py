"""Warm start, controlled: does a (wrong) simulator's warm start save real trials?

    python bench/warmstart.py                # make bench-warmstart: every scenario, 20 seeds; docs/warmstart.md
    python bench/warmstart.py --quick        # 2 scenarios (QUICK), 4 seeds, 60 prior trials: a smoke run
    python bench/warmstart.py --told         # wrong priors: picks queued vs simulated trials told to TPE

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

``--told`` measures the other way to give TPE the prior's knowledge, with the wrong priors: the prior's
simulated trials told to the search study before the baseline, with the prior's predicted scores and SLO
constraints (:func:`tuner.search.prior.as_told`, as its simulated study scored them), so that TPE's model
starts from them; against cold, the picks (tuner's warm start) and both, on the same seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from _common import ROOT, common_args, pool_map
from scenarios import SCENARIOS, Scenario
from search_efficiency import (
    K_MAX,
    Outcome,
    Point,
    _pct,
    baseline_params,
    optima,
    run_search,
    trials_to,
    world,
    write_doc,
)

from tuner.search.prior import SimTarget, as_told, simulated_study, top_distinct
from tuner.search.samplers import make_sampler
from tuner.sim.args import config_from_flags
from tuner.sim.hardware import get_hardware
from tuner.sim.predict import Prediction, perturbed, predict

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


Told = list[tuple[dict[str, Any], Outcome]]


def _prior_picks(task: tuple[str, str, int, int, int]) -> tuple[str, str, list[Point], float, Told]:
    """One warm start: the prior's top distinct grid points, the seconds it took, and its simulated trials
    as a study is told them (snapped params, the prior's outcome)."""
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
    told: Told = []
    for params, r in snapped:
        score, cons = as_told(r, metric=METRIC, direction="maximize", slo=sc.slo)
        told.append((params, Outcome(score, cons, r.failure is None and max(cons.values()) <= 0)))
    return sc_name, prior, [sc.snap(p) for p, _ in picks], time.monotonic() - t0, told


#: the prior's picks and simulated trials by (scenario, prior), kept for the search workers (set before
#: they fork)
_PICKS: dict[tuple[str, str], list[Point]] = {}
_TOLD: dict[tuple[str, str], Told] = {}


#: how a search uses the prior: nothing, its picks queued (what tuner does), its simulated trials told to
#: the study first, or both (``--told``)
ARMS = ("cold", "picks", "told", "both")


def _search(task: tuple[str, str, int, str]) -> tuple[str, str, int, list[float]]:
    """One real search (the world's table) of ``task``'s arm (:data:`ARMS`): the baseline, the prior's picks
    (arms picks, both), TPE; the prior's simulated trials told to the study first (arms told, both)."""
    sc_name, prior, seed, arm = task
    told = _TOLD[(sc_name, prior)] if arm in ("told", "both") else []
    sc = next(s for s in SCENARIOS if s.name == sc_name)
    picks = [
        {p.name: v for p, v in zip(sc.params, pt, strict=True)}
        for pt in (_PICKS.get((sc_name, prior), []) if arm in ("picks", "both") else [])
    ]
    table, opt = world(sc_name)
    curve = run_search(
        sc,
        table,
        opt,
        lambda: make_sampler("tpe", seed=seed, n_objectives=1, constraints_func=None, search_space=sc.space),
        K_MAX,
        [baseline_params(sc), *picks],
        told,
    )
    return sc_name, prior, seed, curve


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
        table, _ = world(sc.name)
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


TOLD_START, TOLD_END = "<!-- warmstart-told:start -->", "<!-- warmstart-told:end -->"
TOLD_SECTION = "Queued picks, or the simulated trials told to TPE"


def told_report(
    curves: dict[tuple[str, int, str], list[float]],
    scenarios: Sequence[Scenario],
    args: argparse.Namespace,
    elapsed: float,
) -> list[str]:
    """The table of ``--told``: trials to 95 % in each arm (:data:`ARMS`) with a wrong prior, per scenario
    and pooled, and the paired difference of "told" (the prior's knowledge as data for TPE, no picks) to
    "picks" (tuner's warm start)."""
    lines = [
        f"Wrong priors only ({', '.join(WRONG)}[seed mod {len(WRONG)}]), {args.prior_trials} simulated trials "
        f"each, top {args.top}, {args.seeds} seeds a scenario; trials to 95 % of the optimum, median / worst "
        f"10 % / mean (a search that never got there counts as {K_MAX + 1}). cold: no prior; picks: the prior's "
        "top distinct queued after the baseline (tuner's warm start); told: the prior's simulated trials told "
        "to the study before the baseline (its predicted scores and SLO constraints), no picks; both.",
        "",
        "| scenario | "
        + " | ".join(ARMS)
        + " | told - picks per seed: median / worse by >1 / better by >1 |",
        "|---|" + "---|" * len(ARMS) + "---|",
    ]
    pooled: dict[str, list[float]] = {a: [] for a in ARMS}
    diffs: list[float] = []
    for sc in scenarios:
        per = {
            a: {s: _cap(trials_to(c)) for (n, s, arm), c in curves.items() if n == sc.name and arm == a}
            for a in ARMS
        }
        cols = []
        for a in ARMS:
            v = list(per[a].values())
            pooled[a] += v
            cols.append(f"{_fmt(_pct(v, 50))} / {_fmt(_pct(v, 90))} / {np.mean(v):.1f}")
        d = [per["told"][s] - per["picks"][s] for s in per["picks"] if s in per["told"]]
        diffs += d
        lines.append(
            f"| {sc.name} | "
            + " | ".join(cols)
            + f" | {np.median(d):+.0f} / {np.mean([x > 1 for x in d]):.0%} / {np.mean([x < -1 for x in d]):.0%} |"
        )
    lines += [
        "",
        "Pooled: "
        + "; ".join(
            f"{a} median {_fmt(_pct(v, 50))}, worst 10 % {_fmt(_pct(v, 90))}, mean {np.mean(v):.1f}"
            for a, v in pooled.items()
        )
        + f" ({len(pooled['picks'])} searches each). Told - picks, paired: median {np.median(diffs):+.0f}, worse "
        f"by more than one trial in {np.mean([x > 1 for x in diffs]):.0%}, better by more than one in "
        f"{np.mean([x < -1 for x in diffs]):.0%}.",
        "",
        f"Wall time {elapsed:.0f} s on {args.procs} processes ({os.cpu_count()} cores).",
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


def _stored_study(
    db: str, study_file: str, model: str | None, hardware: str | None
) -> tuple[Any, SimTarget, optuna.Study]:
    """The study file (with ``model`` as its model shape), its simulator target and the stored study."""
    from tuner.config.spec import load_spec
    from tuner.search.prior import sim_target

    spec = load_spec(study_file)
    if model:
        spec = spec.model_copy(update={"model": model})
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(db).resolve()}")
    return spec, sim_target(spec, hardware), optuna.load_study(study_name=spec.name, storage=storage)


def error_table(db: str, study_file: str, model: str | None, hardware: str | None) -> list[str]:
    """The simulator's prediction for each finished trial of a stored study (read-only) against its
    measurement: one row a trial, then the median absolute error per metric."""
    from tuner.search.prior import measured_metrics, prediction_errors
    from tuner.search.record import read

    spec, target, study = _stored_study(db, study_file, model, hardware)
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


REFIT_START, REFIT_END = "<!-- refit-replay:start -->", "<!-- refit-replay:end -->"
REFIT_METRICS = ("output_throughput", "ttft_p99", "itl_p99")


def refit_replay(db: str, study_file: str, model: str | None, hardware: str | None) -> list[str]:
    """A stored study (read-only) replayed in trial order: each measured trial's prediction with the
    profile's constants and with the constants refit (:func:`tuner.sim.refit.refit`, as the study does
    online) on the earlier trials only; one row a trial, then the median / max absolute error of each."""
    from tuner.search.prior import measured_metrics, observations, prediction_errors
    from tuner.search.record import read
    from tuner.sim.refit import refit

    _, target, study = _stored_study(db, study_file, model, hardware)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    seen = observations(trials, target)
    head = "| trial | refit on: n (earlier trials) | scales | " + " | ".join(
        f"{m} err base / refit" for m in REFIT_METRICS
    )
    lines = [head + " |", "|---|---|---|" + "---|" * len(REFIT_METRICS)]
    errs: dict[tuple[str, str], list[float]] = {(m, k): [] for m in REFIT_METRICS for k in ("base", "refit")}
    costs: list[tuple[float, int]] = []
    for t in trials:
        rec = read(t)
        meas = measured_metrics(
            rec.result.metrics if rec.result and rec.finished and not rec.failed else None
        )
        if not meas:
            continue
        earlier = [o for o in seen if o.label is not None and o.label < t.number]
        fitted = refit(target.hardware, earlier) if earlier else None
        if fitted is not None:
            costs.append((fitted.seconds, fitted.evaluations))
        params = dict(rec.run_params)
        e0 = prediction_errors(target.predict(params), meas)
        hw = fitted.hardware if fitted is not None else target.hardware
        e1 = prediction_errors(dataclasses.replace(target, hardware=hw).predict(params), meas)
        cells = []
        for m in REFIT_METRICS:
            for k, e in (("base", e0), ("refit", e1)):
                if m in e:
                    errs[(m, k)].append(abs(e[m]))
            cells.append(" / ".join(f"{e[m]:+.0%}" if m in e else "-" for e in (e0, e1)))
        scales = ", ".join(f"{g} x{v:.2f}" for g, v in fitted.scales.items()) if fitted else "-"
        used = f"{fitted.n} ({', '.join(map(str, fitted.trials))})" if fitted else "none"
        lines.append(f"| {t.number} | {used} | {scales} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| metric | base: median / max abs error | refit on earlier trials: median / max |",
        "|---|---|---|",
    ]
    for m in REFIT_METRICS:
        b, r = errs[(m, "base")], errs[(m, "refit")]
        if b and r:
            lines.append(f"| {m} | {np.median(b):.0%} / {max(b):.0%} | {np.median(r):.0%} / {max(r):.0%} |")
    if costs:
        secs = [c for c, _ in costs]
        lines += [
            "",
            f"Refit cost: median {np.median(secs):.2f} s, max {max(secs):.2f} s, "
            f"{int(np.median([n for _, n in costs]))} evaluations (median), in one process "
            f"({os.cpu_count()} cores, shared); profile {target.hardware.name}, {len(costs)} refits.",
        ]
    return lines


def _num(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return "-" if v is None else str(v)


def main(argv: Sequence[str] | None = None) -> int:
    ap = common_args(
        (__doc__ or "").splitlines()[0],
        seed_base=2000,
        quick="2 scenarios, 4 seeds, 60 prior trials; no doc update",
    )
    ap.add_argument("--prior-trials", type=int, default=300)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--told", action="store_true", help="wrong priors' simulated trials told to TPE too, vs picks only"
    )
    ap.add_argument("--errors", metavar="DB", help="only the predicted-vs-measured table of a stored study")
    ap.add_argument("--study-file", help="with --errors: the study's file")
    ap.add_argument("--model", help="with --errors: the model shape to simulate (a built-in name)")
    ap.add_argument("--hardware", help="with --errors: the simulator's profile")
    ap.add_argument(
        "--refit", action="store_true", help="with --errors: replay the study's online refit (base vs refit)"
    )
    args = ap.parse_args(argv)
    if args.errors:
        table, markers, section = (
            (refit_replay, (REFIT_START, REFIT_END), "Online refit")
            if args.refit
            else (error_table, (ERR_START, ERR_END), "Predicted vs measured")
        )
        lines = table(args.errors, args.study_file, args.model, args.hardware)
        print("\n".join(lines))
        if not args.no_write:
            write_doc(lines, DOC, markers=markers, title="Warm start", section=section)
        return 0
    if args.quick:
        args.seeds, args.prior_trials = 4, 60
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    t0 = time.monotonic()
    names = args.scenarios or ([*QUICK] if args.quick else [s.name for s in SCENARIOS])
    scenarios = [s for s in SCENARIOS if s.name in names]

    optimum = {name: o.score for name, o in optima(scenarios, args.procs, t0)[1].items()}
    priors = WRONG if args.told else list(PRIORS)
    tasks = [
        (sc.name, k, args.prior_trials, args.top, i)
        for sc in scenarios
        for i, k in enumerate(PRIORS)
        if k in priors
    ]
    picks: dict[tuple[str, str], list[Point]] = {}
    prior_s: dict[tuple[str, str], float] = {}
    for name, prior, pts, took, told in pool_map(_prior_picks, tasks, args.procs):
        picks[(name, prior)], prior_s[(name, prior)] = pts, took
        if args.told:
            _TOLD[(name, prior)] = told
    print(f"[{time.monotonic() - t0:5.0f}s] priors done ({len(tasks)})", flush=True)

    _PICKS.update(picks)
    seeds = [args.seed_base + i for i in range(args.seeds)]
    if args.told:
        told_tasks = [
            (sc.name, WRONG[i % len(WRONG)], s, arm)
            for sc in scenarios
            for i, s in enumerate(seeds)
            for arm in ARMS
        ]
        runs = pool_map(_search, told_tasks, args.procs)
        told_curves = {(n, s, t[3]): c for (n, _, s, c), t in zip(runs, told_tasks, strict=True)}
        lines = told_report(told_curves, scenarios, args, time.monotonic() - t0)
        print("\n".join(lines))
        if not args.quick and not args.no_write:
            write_doc(lines, DOC, markers=(TOLD_START, TOLD_END), title="Warm start", section=TOLD_SECTION)
            print(f"\nwritten: {DOC.relative_to(ROOT)}")
        return 0
    search_tasks = [(sc.name, "cold", s, "cold") for sc in scenarios for s in seeds]
    search_tasks += [(sc.name, "right", s, "picks") for sc in scenarios for s in seeds]
    search_tasks += [
        (sc.name, WRONG[i % len(WRONG)], s, "picks") for sc in scenarios for i, s in enumerate(seeds)
    ]
    curves = {(n, p, s): c for n, p, s, c in pool_map(_search, search_tasks, args.procs)}
    print(f"[{time.monotonic() - t0:5.0f}s] searches done ({len(search_tasks)})", flush=True)

    lines = report(curves, picks, prior_s, optimum, scenarios, args, time.monotonic() - t0)
    print("\n".join(lines))
    if not args.quick and not args.no_write:
        write_doc(lines, DOC, markers=(START, END), title="Warm start", section="Controlled benchmark")
        print(f"\nwritten: {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
