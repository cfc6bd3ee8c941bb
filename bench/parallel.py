"""Parallel search efficiency: does running 1, 2, 4 or 8 trials at once still find the best configuration?

    python bench/parallel.py            # make bench-parallel: every scenario, 20 seeds, the table into docs/parallel.md
    python bench/parallel.py --quick    # 2 scenarios (search_efficiency.QUICK), 20 seeds, print only

For each scenario of ``bench/scenarios.py`` the exhaustive optimum is found as in
``bench/search_efficiency.py`` (same grid, same capacity rule, same constraints). Then, for every seed and
every slot count N, a search of :data:`BUDGET` trials runs as ``tuner run --gpus`` runs it: tuner's default
sampler (``make_sampler("tpe")``: multivariate TPE with constant liar), vLLM's defaults queued first, and a
new trial asked whenever one of the N slots is free, while the others are still running (Optuna's
ask/tell; a running trial is seen by the sampler as running). Time is simulated: a trial costs a server
start drawn from 96-152 s (the H200's measured range for an 8B model with a new compile key) plus, when the
server starts, 60-180 s of capacity-mode load; the draws are the same for every N at a given seed.

Reported per N: trials and wall-clock hours until the best feasible trial reaches 95 % of the optimum
(median and worst decile over seeds and scenarios; "never" counts as the budget's end), the wall-clock
speed-up against one slot, the share of searches that get there, and the final best as a share of the
optimum (median and worst decile).
"""

from __future__ import annotations

import heapq
import math
import time
import warnings
from collections.abc import Sequence

import numpy as np
import optuna
import search_efficiency as se
from _common import ROOT, common_args, pool_map
from scenarios import SCENARIOS

from tuner.config.space import suggest_from
from tuner.search.samplers import make_sampler

DOC = ROOT / "docs" / "parallel.md"
START, END = "<!-- parallel:start -->", "<!-- parallel:end -->"
SLOTS = (1, 2, 4, 8)
BUDGET = 40
#: simulated seconds: a server start (H200, 8B model, new compile key) and a capacity-mode load
START_S = (96.0, 152.0)
LOAD_S = (60.0, 180.0)


def search(task: tuple[str, int, int]) -> tuple[str, int, int, list[tuple[float, float]]]:
    """One search with ``slots`` trials at once: (simulated end time, best share of the optimum) per trial
    in the order the trials finished."""
    sc_name, slots, seed = task
    sc = next(s for s in SCENARIOS if s.name == sc_name)
    table, opt = se.world(sc_name)
    rng = np.random.default_rng(seed + 7919)
    costs = {"start": rng.uniform(*START_S, size=BUDGET), "load": rng.uniform(*LOAD_S, size=BUDGET)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = make_sampler("tpe", seed=seed, n_objectives=1, constraints_func=None, search_space=sc.space)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial(se.baseline_params(sc))
        running: list[tuple[float, int, optuna.Trial, se.Outcome]] = []
        now, best, asked = 0.0, 0.0, 0
        curve: list[tuple[float, float]] = []
        while len(curve) < BUDGET:
            while len(running) < slots and asked < BUDGET:
                trial = study.ask()
                values = {name: suggest_from(trial, name, d) for name, d in sc.space.items()}
                o = table[sc.snap(values)]
                cost = costs["start"][asked] + (0.0 if o.failure else costs["load"][asked])
                heapq.heappush(running, (now + float(cost), trial.number, trial, o))
                asked += 1
            now, _, trial, o = heapq.heappop(running)
            for k, v in o.constraints.items():
                trial.set_constraint(k, v)
            study.tell(trial, o.score)
            if o.feasible:
                best = max(best, o.score)
            curve.append((now, best / opt))
    return sc_name, slots, seed, curve


def to_target(curve: Sequence[tuple[float, float]], frac: float = 0.95) -> tuple[float, float]:
    """(trials, seconds) until the best reaches ``frac`` of the optimum; (inf, inf) when it never does."""
    for i, (t, share) in enumerate(curve):
        if share >= frac - 1e-12:
            return float(i + 1), t
    return math.inf, math.inf


def _q(values: Sequence[float], q: float, method: str = "higher") -> float:
    """The ``q`` quantile, an observed value ("never" stays infinite); ``higher``: the worse side for
    trials and hours, ``lower`` for a share of the optimum."""
    return float(np.quantile(np.array(values), q, method=method))  # type: ignore[call-overload]


def _show(x: float, fmt: str) -> str:
    return "never" if math.isinf(x) else format(x, fmt)


def report(results: dict[int, list[list[tuple[float, float]]]], n_scenarios: int, seeds: int) -> list[str]:
    """The table of the doc: one row per slot count."""
    base = results[SLOTS[0]]
    base_h = [to_target(c)[1] / 3600 for c in base]
    lines = [
        f"{n_scenarios} scenarios x {seeds} seeds, {BUDGET} trials each; tuner's default sampler (TPE, constant "
        "liar), vLLM's defaults first.",
        "",
        "| slots | trials to 95 % (median / p90) | hours to 95 % (median / p90) | speed-up vs 1 slot (median) "
        "| reach 95 % | final best (median / p10) |",
        "|---|---|---|---|---|---|",
    ]
    for n in SLOTS:
        curves = results[n]
        hit = [to_target(c) for c in curves]
        trials, hours = [h[0] for h in hit], [h[1] / 3600 for h in hit]
        speed = [b / h for b, h in zip(base_h, hours, strict=True) if math.isfinite(b) and math.isfinite(h)]
        final = [c[-1][1] for c in curves]
        reach = sum(math.isfinite(t) for t in trials) / len(trials)
        lines.append(
            f"| {n} | {_show(_q(trials, 0.5), '.0f')} / {_show(_q(trials, 0.9), '.0f')} "
            f"| {_show(_q(hours, 0.5), '.1f')} / {_show(_q(hours, 0.9), '.1f')} "
            f"| {float(np.median(speed)) if speed else math.nan:.1f}x | {reach:.0%} "
            f"| {_q(final, 0.5, 'lower'):.1%} / {_q(final, 0.1, 'lower'):.1%} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = common_args(
        (__doc__ or "").splitlines()[0], seed_base=2000, quick="the 2 scenarios of search_efficiency --quick"
    )
    ap.add_argument("--write", action="store_true", help="put the table into docs/parallel.md")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    t0 = time.monotonic()
    scenarios = [s for s in SCENARIOS if args.scenarios is None or s.name in args.scenarios]
    if args.quick:
        scenarios = [s for s in scenarios if s.name in se.QUICK] or scenarios[:2]
    se.optima(scenarios, args.procs, t0)
    tasks = [(sc.name, n, args.seed_base + s) for sc in scenarios for n in SLOTS for s in range(args.seeds)]
    results: dict[int, list[list[tuple[float, float]]]] = {n: [] for n in SLOTS}
    done = pool_map(search, tasks, args.procs, chunksize=4)
    for _, n, _, curve in sorted(done, key=lambda d: (d[0], d[2])):
        results[n].append(curve)
    lines = report(results, len(scenarios), args.seeds)
    lines.append("")
    lines.append(
        f"Measured with `python bench/parallel.py{' --quick' if args.quick else ''}` "
        f"in {time.monotonic() - t0:.0f} s on {args.procs} processes."
    )
    print("\n".join(lines))
    if args.write:
        se.write_doc(lines, DOC, markers=(START, END), title="Parallel search", section="Results")
        print(f"\nwritten: {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
