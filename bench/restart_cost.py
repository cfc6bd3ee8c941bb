"""Restart cost: does compile-key awareness buy search quality per hour of GPU time?

    python bench/restart_cost.py              # the benchmark (make bench-restart): table + docs/restart_cost.md
    python bench/restart_cost.py --quick      # 2 scenarios, 3 seeds, no doc update: a smoke run

On a GPU the server start dominates a trial, and a start whose *compile key* (:func:`tuner.search.restart_cost.
compile_key`) vLLM has compiled before is ~30 s shorter. Tuner's TPE can be told so
(:func:`tuner.search.samplers.set_trial_cost`), in mode ``rank`` (rank its own candidates by expected improvement per
second) or ``variants`` (also offer each candidate with every compiled key's values); ``off`` is plain TPE.
This benchmark runs each mode on the simulator against a simulated GPU clock.

For every scenario (``h200-llama8b``, the space of ``studies/h200-llama8b.yaml``, defined here; those of
``bench/scenarios.py``, whose integer ranges make compile keys practically unique; and their ``-lists`` twins,
max-num-seqs and max-num-batched-tokens as power-of-two choice lists, where keys repeat):

1. the exhaustive optimum over the scenario's fine grid (``bench/search_efficiency.py``'s grid machinery and
   capacity-mode objective: tuner's own capacity rule with the scenario's ``capacity``; ``h200-llama8b`` uses
   the study file's, levels 32, 64, 128, 256 with 256 requests a step, the others a study file's default);
2. per mode and seed, an ask/tell study as tuner's study loop runs it (``tuner.search.loop._optimize``): the sampler of
   ``make_sampler("tpe")`` over the study's space, single objective (the capacity score), constraints by
   ``trial.set_constraint``; trial 0 the baseline (vLLM's defaults: no params, the fixed flags only, as
   ``baseline: true`` gives); before each ``ask`` ``RestartCost.learn`` over the :class:`Launch` records of
   the finished trials and ``set_trial_cost(sampler, cost, mode)`` (not in ``off``); the compile key of the
   effective flags (fixed flags + the trial's raw params, ``none`` = flag not passed) with ``compile_key``.
   Configurations tuner refuses before launch (``tuner.config.space.prelaunch_violation``, and the predictive memory
   check ``tuner.measure.memory.check_fits`` that a GPU host runs) cost 0 s and are infeasible. A launched trial costs
   its server start, drawn from U(72, 101) s for a compile key not started healthy before in this search,
   U(47, 64) s for one that was, U(44, 50) s for a start that fails (out of memory, invalid), plus U(35, 60) s
   of load steps for a healthy start (H200, vLLM 0.26, Llama-3.1-8B). Draws are common random numbers: trial
   i of a seed uses the same two uniforms in every mode, and the sampler seed is the same, so the modes part
   only where their choices do. Each search runs until its clock passes 2 hours.

Reported per scenario and mode: launched trials (server starts, healthy or failed) per hour of simulated GPU
time; the share of healthy starts with a compiled key; the best feasible score as a fraction of the optimum
after 30 minutes, 1 hour and 2 hours (median and worst decile over seeds; a trial counts once it has ended);
the median time to reach 95% of the optimum; and, pooled, each mode against ``off`` on the same scenario and
seed (ahead / behind, exact sign test). Results go to stdout and ``docs/restart_cost.md`` (between the
restart markers). The searches run on two processes.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from _common import ROOT, common_args, pool_map
from optuna.distributions import CategoricalDistribution
from scenarios import SCENARIOS as BENCH_SCENARIOS
from scenarios import Param, Scenario, Value
from search_efficiency import Outcome, Point, evaluate, failed_outcome, grid_table
from search_efficiency import write_doc as write_marked_doc

from tuner.config.space import prelaunch_violation, suggest_from
from tuner.config.workload import CapacitySpec
from tuner.measure.memory import check_fits
from tuner.report.status import summarize_starts
from tuner.search.record import ATTR_BASELINE, is_baseline
from tuner.search.restart_cost import Launch, RestartCost, compile_key
from tuner.search.samplers import make_sampler, set_trial_cost
from tuner.sim.hardware import get_hardware
from tuner.sim.model_shape import BUILTIN

DOC = ROOT / "docs" / "restart_cost.md"
START, END = "<!-- restart:start -->", "<!-- restart:end -->"
MODES = ("off", "rank", "variants")
HORIZON_S = 7200.0
CHECKPOINTS_S = (1800.0, 3600.0, 7200.0)
MAX_TRIALS = 400  # a guard: refused configurations cost no time
#: seconds (low, high) of a server start with a new compile key, a compiled one, a failed start; of the load
START_NEW_S = (72.0, 101.0)
START_CACHED_S = (47.0, 64.0)
START_FAILED_S = (44.0, 50.0)
LOAD_S = (35.0, 60.0)
CACHE = "bench-host:cache"  # one compile cache for the whole search (one machine, cache kept)

# ---- the H200 scenario: studies/h200-llama8b.yaml ---------------------------------------------------------

#: bench/scenarios.py's h200-llama8b (its model, workload, SLO and five flags; max-model-len: vLLM's default,
#: 131072, as the study file leaves it) under the study file's own ladder
H200 = replace(
    next(sc for sc in BENCH_SCENARIOS if sc.name == "h200-llama8b"),
    title="studies/h200-llama8b.yaml: chat (1024 in / 256 out), Llama-3.1-8B on H200, choice lists",
    capacity=CapacitySpec(levels=[32, 64, 128, 256], requests_per_step=256, stop_factor=2.0),
)
#: bench/scenarios.py's scenarios but its h200-llama8b (the same study under the refined rule from concurrency 1):
#: this benchmark keeps the H200 study's own ladder above
SCENARIOS = tuple(sc for sc in BENCH_SCENARIOS if sc.name != H200.name)
#: choice lists a study file would give for max-num-seqs and max-num-batched-tokens (powers of two, a subset
#: of the fine grids): the ``-lists`` twins of the scenarios, whose compile keys repeat
LIST_CHOICES: dict[str, tuple[int, ...]] = {
    "max-num-seqs": (8, 16, 32, 64, 128, 256, 512),
    "max-num-batched-tokens": (128, 256, 512, 1024, 2048, 4096, 8192, 16384),
}
LISTS_SUFFIX = "-lists"


def as_lists(sc: Scenario) -> Scenario:
    """``sc`` with max-num-seqs and max-num-batched-tokens searched over :data:`LIST_CHOICES`."""
    params = []
    for p in sc.params:
        choices = LIST_CHOICES.get(p.name)
        if choices is not None:
            assert set(choices) <= set(p.grid), p.name
            p = Param(p.name, CategoricalDistribution(list(choices)), choices)
        params.append(p)
    return replace(sc, name=sc.name + LISTS_SUFFIX, title=sc.title + "; lists", params=tuple(params))


ALL_SCENARIOS: tuple[Scenario, ...] = (H200, *SCENARIOS, *(as_lists(sc) for sc in SCENARIOS))
QUICK_SCENARIOS = (H200.name, "chat-h100-lists")


def effective_flags(sc: Scenario, params: Mapping[str, Any]) -> dict[str, Value | None]:
    """The flags a trial's server gets (``tuner.config.argv.trial_flags``): fixed flags + params, ``none`` = absent."""
    flags: dict[str, Value | None] = dict(sc.fixed)
    for k, v in params.items():
        flags[k] = None if v == "none" else v
    return flags


def refused(sc: Scenario, flags: Mapping[str, Value | None]) -> str | None:
    """Why tuner refuses ``flags`` before launch: its pre-launch rules, then its memory check (run on a GPU
    host with the model's config.json), or None."""
    reason = prelaunch_violation(flags)
    if reason is not None:
        return reason
    config = BUILTIN.get(sc.model.lower())
    if config is None:
        return None
    verdict = check_fits(config, flags, get_hardware(sc.hardware).memory_bytes)
    return None if verdict.fits else verdict.reason


# ---- the exhaustive grid ----------------------------------------------------------------------------------

_GRID_SC: Scenario | None = None


def _eval_group(points: list[Point]) -> list[tuple[Point, Outcome]]:
    """Points differing only in gpu-memory-utilization, gmu up; an outcome whose runs the KV cache never
    constrained is reused for larger gmu (exact: ``search_efficiency``'s shortcut)."""
    sc = _GRID_SC
    assert sc is not None
    i_gmu = [p.name for p in sc.params].index("gpu-memory-utilization")
    out: list[tuple[Point, Outcome]] = []
    prev: Outcome | None = None
    for pt in sorted(points, key=lambda p: float(p[i_gmu])):
        if prev is not None and prev.failure is None and not prev.kv_limited:
            o = prev
        else:
            o = evaluate(sc, (), flags=effective_flags(sc, sc.flags(pt)))
        out.append((pt, o))
        prev = o
    return out


def grid(
    sc: Scenario, procs: int, done: Mapping[str, dict[Point, Outcome]] | None = None
) -> dict[Point, Outcome]:
    """Every grid point's outcome: a ``-lists`` twin's from its scenario's (in ``done`` or computed),
    ``search_efficiency.grid_table`` for its scenarios, else by gmu groups."""
    if sc.name.endswith(LISTS_SUFFIX):
        parent = next(s for s in ALL_SCENARIOS if s.name == sc.name.removesuffix(LISTS_SUFFIX))
        full = (done or {}).get(parent.name) or grid(parent, procs)
        return {pt: full[pt] for pt in sc.points()}
    if "enable-prefix-caching" in sc.space:
        return grid_table(sc, procs)
    global _GRID_SC
    _GRID_SC = sc
    i_gmu = [p.name for p in sc.params].index("gpu-memory-utilization")
    groups: dict[Point, list[Point]] = {}
    for pt in sc.points():
        groups.setdefault(tuple(v for i, v in enumerate(pt) if i != i_gmu), []).append(pt)
    return {pt: o for part in pool_map(_eval_group, groups.values(), procs, chunksize=2) for pt, o in part}


# ---- one search against the simulated clock ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One search: per trial its end on the simulated clock and the best feasible fraction so far."""

    scenario: str
    mode: str
    seed: int
    ends: tuple[float, ...]
    best: tuple[float, ...]
    launched: int  # server starts (healthy or failed)
    refused: int  # refused before launch (0 s)
    cached: int  # healthy starts with a compiled key
    new: int  # healthy starts with a new key
    clock_s: float

    @property
    def trials_per_hour(self) -> float:
        return 3600.0 * self.launched / self.clock_s if self.clock_s > 0 else 0.0

    @property
    def cached_share(self) -> float:
        return self.cached / (self.cached + self.new) if self.cached + self.new else 0.0

    def best_at(self, t: float) -> float:
        """The best feasible fraction among the trials ended by ``t`` seconds."""
        out = 0.0
        for end, b in zip(self.ends, self.best, strict=True):
            if end > t:
                break
            out = b
        return out

    def time_to(self, frac: float = 0.95) -> float:
        """Seconds until a trial at >= ``frac`` of the optimum ended; inf when none within the horizon."""
        for end, b in zip(self.ends, self.best, strict=True):
            if b >= frac - 1e-12:
                return end
        return math.inf


_TABLES: dict[str, dict[Point, Outcome]] = {}
_OPT: dict[str, float] = {}
_BASE: dict[str, Outcome] = {}


def _uniform(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + u * (bounds[1] - bounds[0])


def search(task: tuple[str, str, int]) -> Run:
    """One study of ``mode`` until the simulated clock passes :data:`HORIZON_S` (see the module docstring)."""
    sc_name, mode, seed = task
    sc = next(s for s in ALL_SCENARIOS if s.name == sc_name)
    table, opt = _TABLES[sc_name], _OPT[sc_name]
    draws = np.random.default_rng([seed, 20250]).random((MAX_TRIALS, 2))

    def key_of(params: Mapping[str, Any]) -> str:
        return compile_key(effective_flags(sc, params), sc.model)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = make_sampler("tpe", seed=seed, n_objectives=1, constraints_func=None, search_space=sc.space)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        cost_aware = mode != "off" and set_trial_cost(sampler, None, mode)
        if mode != "off" and not cost_aware:
            raise RuntimeError("the sampler is not cost-aware")
        study.enqueue_trial({}, user_attrs={ATTR_BASELINE: True}, skip_if_exists=False)
        launches: list[Launch] = []
        started: set[str] = set()
        clock = best = 0.0
        ends: list[float] = []
        bests: list[float] = []
        n_refused = 0
        for i in range(MAX_TRIALS):
            if clock >= HORIZON_S:
                break
            cost = RestartCost.learn(launches, cache=CACHE, key_of=key_of)
            if cost_aware:
                set_trial_cost(sampler, cost, mode)
            trial = study.ask()
            is_base = is_baseline(trial)
            params = {} if is_base else {name: suggest_from(trial, name, d) for name, d in sc.space.items()}
            flags = effective_flags(sc, params)
            key = compile_key(flags, sc.model)
            cached = key in cost.compiled
            u_start, u_load = draws[i]
            startup: float | None = None
            if refused(sc, flags) is not None:
                o, took = failed_outcome(sc, "refused"), 0.0
                n_refused += 1
            else:
                o = _BASE[sc_name] if is_base else table[sc.snap(params)]
                if o.failure is not None:
                    took = _uniform(START_FAILED_S, u_start)
                else:
                    startup = _uniform(START_CACHED_S if key in started else START_NEW_S, u_start)
                    took = startup + _uniform(LOAD_S, u_load)
                    started.add(key)
            clock += took
            launch = Launch(key, CACHE, cached, startup, took, None if is_base else params, launched=took > 0)
            launches.append(launch)
            for k, v in o.constraints.items():
                trial.set_constraint(k, v)
            study.tell(trial, o.score)
            if o.feasible:
                best = max(best, o.score / opt)
            ends.append(clock)
            bests.append(best)
    starts = summarize_starts(launches)
    return Run(
        scenario=sc_name,
        mode=mode,
        seed=seed,
        ends=tuple(ends),
        best=tuple(bests),
        launched=len(ends) - n_refused,
        refused=n_refused,
        cached=starts.cached,
        new=starts.new,
        clock_s=clock,
    )


def _init(tables: dict[str, dict[Point, Outcome]], opt: dict[str, float], base: dict[str, Outcome]) -> None:
    _TABLES.update(tables)
    _OPT.update(opt)
    _BASE.update(base)


# ---- report ----------------------------------------------------------------------------------------------


def _p10(values: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), 10, method="inverted_cdf"))


def _median_time(values: Sequence[float]) -> str:
    t = float(np.percentile(np.asarray(values, dtype=float), 50, method="inverted_cdf"))
    return f"> {HORIZON_S / 3600:.0f} h" if not math.isfinite(t) else f"{t / 60:.0f} min"


def _hours(t: float) -> str:
    return f"{t / 60:.0f} min" if t < 3600 else f"{t / 3600:g} h"


def _rows(runs: Sequence[Run]) -> list[str]:
    cols = [
        f"{np.median(v):.3f} / {_p10(v):.3f}" for v in ([r.best_at(t) for r in runs] for t in CHECKPOINTS_S)
    ]
    reach = np.mean([r.time_to() <= HORIZON_S for r in runs])
    return [
        f"{len(runs)}",
        f"{np.median([r.trials_per_hour for r in runs]):.1f}",
        f"{np.mean([r.cached_share for r in runs]):.0%}",
        *cols,
        _median_time([r.time_to() for r in runs]),
        f"{reach:.0%}",
    ]


def report(
    runs: Sequence[Run],
    scenarios: Sequence[Scenario],
    info: Mapping[str, tuple[float, Point, int, int, int, float]],
) -> list[str]:
    lines = [
        "| scenario | grid points (simulated) | compile keys in the grid | optimum tok/s | optimum config | "
        "vLLM defaults |",
        "|---|---|---|---|---|---|",
    ]
    for sc in scenarios:
        opt, pt, n, n_sim, n_keys, dflt = info[sc.name]
        cfg = ", ".join(f"{k}={v}" for k, v in sc.flags(pt).items() if k != "max-model-len")
        lines.append(f"| {sc.name} | {n:,} ({n_sim:,}) | {n_keys} | {opt:,.0f} | {cfg} | {dflt / opt:.0%} |")
    lines.append("")
    checks = " | ".join(f"best @ {_hours(t)} median / worst 10%" for t in CHECKPOINTS_S)
    head = f"| scenario | mode | seeds | trials/h | cached starts | {checks} | time to 95% (median) | 95% within 2 h |"
    sep = "|---|---|---|---|---|" + "---|" * (len(CHECKPOINTS_S) + 2)
    lines += [head, sep]
    for sc in scenarios:
        for mode in MODES:
            mine = [r for r in runs if r.scenario == sc.name and r.mode == mode]
            if mine:
                lines.append(f"| {sc.name} | {mode} | " + " | ".join(_rows(mine)) + " |")
    groups = {
        H200.name: [H200.name] if H200 in scenarios else [],
        "bench/scenarios.py, ranges": [sc.name for sc in scenarios if sc.name in {s.name for s in SCENARIOS}],
        "bench/scenarios.py, lists": [sc.name for sc in scenarios if sc.name.endswith(LISTS_SUFFIX)],
    }
    groups = {k: v for k, v in groups.items() if v}
    pooled = {k: v for k, v in groups.items() if len(v) > 1}
    if pooled:
        lines += ["", "Pooled (all searches of a mode over the group's scenarios):", ""]
        lines += [head.replace("| scenario | mode |", "| group | mode |"), sep]
        for label, names in pooled.items():
            for mode in MODES:
                mine = [r for r in runs if r.scenario in names and r.mode == mode]
                if mine:
                    row = f"| {label} ({len(names)}) | {mode} | "
                    lines.append(row + " | ".join(_rows(mine)) + " |")
    lines += ["", *paired(runs, groups)]
    return lines


def sign_test(ahead: int, behind: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven under a fair coin."""
    n = ahead + behind
    if n == 0:
        return 1.0
    k = min(ahead, behind)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n)


def paired(runs: Sequence[Run], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Means over the searches, and each mode against ``off`` on the same scenario and seed (same sampler
    seed, same duration draws): the share of searches where it is ahead / behind at each checkpoint."""
    checks = " / ".join(_hours(t) for t in CHECKPOINTS_S)
    lines = [
        "Mean best feasible fraction over searches, and each mode against `off` on the same scenario and seed "
        "(share of searches ahead / behind `off` by more than 0.001; p: two-sided sign test of ahead against "
        "behind, ties dropped; a search that never reaches 95% counts 2 h in the mean time):",
        "",
        f"| group | mode | searches | mean trials/h | mean best @ {checks} | mean time to 95% | ahead / behind `off` @ "
        f"{checks.replace(' / ', '; ')} |",
        "|---|---|---|---|---|---|---|",
    ]
    off = {(r.scenario, r.seed): r for r in runs if r.mode == "off"}
    for label, names in groups.items():
        for mode in MODES:
            mine = [r for r in runs if r.scenario in names and r.mode == mode]
            if not mine:
                continue
            means = " / ".join(f"{np.mean([r.best_at(t) for r in mine]):.3f}" for t in CHECKPOINTS_S)
            cells = []
            for t in CHECKPOINTS_S:
                diffs = [
                    r.best_at(t) - off[r.scenario, r.seed].best_at(t)
                    for r in mine
                    if (r.scenario, r.seed) in off
                ]
                ahead = sum(d > 1e-3 for d in diffs)
                behind = sum(d < -1e-3 for d in diffs)
                n = max(len(diffs), 1)
                p = sign_test(ahead, behind)
                cells.append("-" if mode == "off" else f"{ahead / n:.0%} / {behind / n:.0%} (p {p:.2g})")
            tph = np.mean([r.trials_per_hour for r in mine])
            t95 = np.mean([min(r.time_to(), HORIZON_S) for r in mine]) / 60
            lines.append(
                f"| {label} | {mode} | {len(mine)} | {tph:.1f} | {means} | {t95:.1f} min | {'; '.join(cells)} |"
            )
    return lines


def write_doc(lines: Sequence[str], doc: Path = DOC) -> None:
    write_marked_doc(lines, doc, markers=(START, END), title="Restart cost", section="Results")


def _tasks(scenarios: Sequence[Scenario], seeds: Sequence[int]) -> Iterator[tuple[str, str, int]]:
    for sc in scenarios:
        for seed in seeds:
            for mode in MODES:
                yield sc.name, mode, seed


def main(argv: Sequence[str] | None = None) -> int:
    ap = common_args(
        (__doc__ or "").splitlines()[0],
        seed_base=1000,
        quick=f"{', '.join(QUICK_SCENARIOS)}; 3 seeds; no doc",
    )
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    t0 = time.monotonic()
    names = list(QUICK_SCENARIOS) if args.quick and args.scenarios is None else args.scenarios
    scenarios = [s for s in ALL_SCENARIOS if names is None or s.name in names]
    seeds = [args.seed_base + i for i in range(3 if args.quick else args.seeds)]

    tables: dict[str, dict[Point, Outcome]] = {}
    info: dict[str, tuple[float, Point, int, int, int, float]] = {}
    base: dict[str, Outcome] = {}
    for sc in scenarios:
        t = time.monotonic()
        table = grid(sc, args.procs, tables)
        feas = {p: o for p, o in table.items() if o.feasible}
        if not feas:
            raise SystemExit(f"{sc.name}: no feasible configuration on the grid")
        best_pt = max(feas, key=lambda p: feas[p].score)
        opt = feas[best_pt].score
        n_sim = len({id(o) for o in table.values()})
        n_keys = len({compile_key(effective_flags(sc, sc.flags(p)), sc.model) for p in table})
        tables[sc.name] = table
        base[sc.name] = evaluate(sc, (), flags=effective_flags(sc, {}))
        dflt = base[sc.name].score if base[sc.name].feasible else 0.0
        info[sc.name] = (opt, best_pt, len(table), n_sim, n_keys, dflt)
        print(
            f"[{time.monotonic() - t0:5.0f}s] {sc.name}: {len(table)} points ({n_sim} simulated, "
            f"{time.monotonic() - t:.0f} s), optimum {opt:,.0f} tok/s, {len(feas)} feasible",
            flush=True,
        )

    _init(tables, {k: v[0] for k, v in info.items()}, base)
    tasks = list(_tasks(scenarios, seeds))
    runs = pool_map(search, tasks, args.procs)
    elapsed = time.monotonic() - t0
    print(f"[{elapsed:5.0f}s] searches done ({len(tasks)} runs)", flush=True)

    lines = report(runs, scenarios, info)
    lines += [
        "",
        f"Seeds {seeds[0]}-{seeds[-1]}; wall time {elapsed / 60:.1f} min on {args.procs} processes.",
    ]
    print("\n".join(lines))
    if not args.quick and not args.no_write:
        write_doc(lines)
        print(f"\nwritten: {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
