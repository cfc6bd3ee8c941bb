"""Calibration: the simulator against every real measurement in ``../shared/calibration/``.

    python bench/calibrate.py            # print the table and write it into docs/simulator.md
    python bench/calibrate.py --fit      # refit the efficiency constants first (prints them; paste them
                                         # into tuner/sim/hardware.py), then the table with the fitted values

Rows: ``h200-llama8b.csv`` (random-weight Llama-3.1-8B shape on an H200, vLLM 0.26; 300 prompts of 1024
tokens in / 256 out, all sent at t=0) and ``cpu-tiny.csv`` (the CPU build on the 3.3M-parameter tiny Llama,
closed loop at the row's concurrency, 256-word prompts = 257 tokens with BOS, 64 out). Each row is simulated
with the row's flags and load, nothing else: the efficiency constants are global (one set for all GPU
profiles, one for the CPU profile), fitted across all rows of their platform at once, never per row.

Reported per row: output throughput and p50 ITL, simulated vs measured, and the error; then Spearman's rank
correlation of throughput over the rows of each platform and over all rows.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.sim.args import config_from_flags  # noqa: E402
from tuner.sim.engine import SimConfig, SimWorkload, simulate  # noqa: E402
from tuner.sim.hardware import CPU_EFFICIENCY, GPU_EFFICIENCY, Efficiency, Hardware, get_hardware  # noqa: E402
from tuner.sim.model_shape import ModelShape, load_shape, shape_from_config  # noqa: E402

DATA = ROOT.parent / "shared" / "calibration"
DOC = ROOT / "docs" / "simulator.md"
START, END = "<!-- calibration:start -->", "<!-- calibration:end -->"

TINY = shape_from_config(
    {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 4096,
        "max_position_embeddings": 4096,
        "torch_dtype": "float32",
    },
    name="tiny",
)


@dataclass(frozen=True)
class Row:
    """One real measurement and how to reproduce its load."""

    platform: str  # gpu | cpu
    label: str
    hardware: str
    shape: ModelShape
    flags: dict[str, int | float | str | bool | None]
    workload: SimWorkload
    out_tok_s: float
    itl_p50_ms: float
    ttft_p50_ms: float = math.nan
    itl_p99_ms: float = math.nan
    kv_tokens: int | None = None


def _flags(text: str) -> dict[str, int | float | str | bool | None]:
    """``"--max-num-seqs 32 --quantization fp8"`` -> ``{"max-num-seqs": 32, "quantization": "fp8"}``."""
    out: dict[str, int | float | str | bool | None] = {}
    parts = text.split()
    i = 0
    while i < len(parts):
        name = parts[i].removeprefix("--")
        if i + 1 < len(parts) and not parts[i + 1].startswith("--"):
            v = parts[i + 1]
            out[name] = int(v) if v.isdigit() else (float(v) if v.replace(".", "", 1).isdigit() else v)
            i += 2
        else:
            out[name] = True
            i += 1
    return out


def load_rows(data: Path = DATA) -> list[Row]:
    """Every row of the two CSVs (a missing file contributes no rows)."""
    rows: list[Row] = []
    h200 = data / "h200-llama8b.csv"
    if h200.is_file():
        llama = load_shape("meta-llama/Llama-3.1-8B")
        seen: dict[str, int] = {}
        for rec in csv.DictReader(h200.open()):
            flags = rec["flags"].strip()
            seen[flags] = seen.get(flags, 0) + 1
            label = (flags or "(defaults)") + (f" run {seen[flags]}" if flags == "" else "")
            rows.append(
                Row(
                    platform="gpu",
                    label=label,
                    hardware="H200",
                    shape=llama,
                    flags=_flags(flags),
                    workload=SimWorkload(input_tokens=1024, output_tokens=256, requests=300),
                    out_tok_s=float(rec["out_tok_s"]),
                    itl_p50_ms=float(rec["itl_p50_ms"]),
                    ttft_p50_ms=float(rec["ttft_p50_ms"]),
                    itl_p99_ms=float(rec["itl_p99_ms"]),
                    kv_tokens=int(rec["kv_tokens"]),
                )
            )
    cpu = data / "cpu-tiny.csv"
    if cpu.is_file():
        for rec in csv.DictReader(cpu.open()):
            flags = rec["flags"].strip()
            conc = int(rec["concurrency"])
            rows.append(
                Row(
                    platform="cpu",
                    label=f"{flags or '(defaults)'} c={conc} n={rec['requests']}",
                    hardware="cpu-2core",
                    shape=TINY,
                    flags={"max-model-len": 2048, "gpu-memory-utilization": 0.3, **_flags(flags)},
                    workload=SimWorkload(
                        input_tokens=int(rec["input_words"]) + 1,
                        output_tokens=int(rec["output_tokens"]),
                        requests=int(rec["requests"]),
                        concurrency=conc,
                    ),
                    out_tok_s=float(rec["out_tok_s"]),
                    itl_p50_ms=float(rec["itl_p50_ms"]),
                    ttft_p50_ms=float(rec["ttft_p50_ms"]),
                    itl_p99_ms=float(rec["itl_p99_ms"]),
                )
            )
    return rows


def _config(row: Row, eff: Efficiency | None) -> SimConfig:
    cfg = config_from_flags(row.shape.name, row.flags, hardware=row.hardware)
    hw: Hardware = get_hardware(row.hardware)
    if eff is not None:
        hw = hw.with_efficiency(eff)
    return replace(cfg, shape=row.shape, hw=hw)


@dataclass(frozen=True)
class Result:
    row: Row
    out_tok_s: float
    itl_p50_ms: float
    ttft_p50_ms: float
    itl_p99_ms: float
    kv_tokens: int


def run_row(row: Row, eff: Efficiency | None = None) -> Result:
    r = simulate(_config(row, eff), row.workload)
    s = r.summary
    return Result(row, s.output_throughput_tok_s, s.itl_ms.p50, s.ttft_ms.p50, s.itl_ms.p99, r.plan.kv_tokens)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties (nan with fewer than 3 points or a constant side)."""
    if len(a) < 3:
        return math.nan

    def ranks(x: Sequence[float]) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        order = arr.argsort(kind="stable")
        r = np.empty(len(arr))
        i = 0
        while i < len(arr):
            j = i
            while j + 1 < len(arr) and arr[order[j + 1]] == arr[order[i]]:
                j += 1
            r[order[i : j + 1]] = (i + j) / 2.0 + 1
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


# ---- fitting -----------------------------------------------------------------------------------------

_FIT_FIELDS = (
    "gemm",
    "attention",
    "memory",
    "overlap_p",
    "step_s",
    "per_seq_s",
    "ingest_s",
    "mixed_step_s",
    "fp8_gemm",
)


def _unpack(x: np.ndarray, base: Efficiency) -> Efficiency:
    v = np.exp(x)
    return replace(
        base,
        gemm=float(min(v[0], 1.0)),
        attention=float(min(v[1], 1.0)),
        memory=float(min(v[2], 1.0)),
        overlap_p=float(1.0 + v[3]),
        step_s=float(v[4]),
        per_seq_s=float(v[5]),
        ingest_s=float(v[6]),
        mixed_step_s=float(v[7]),
        fp8_gemm=float(min(v[8], 1.0)),
    )


def _pack(e: Efficiency) -> np.ndarray:
    vals = [
        e.gemm,
        e.attention,
        e.memory,
        max(e.overlap_p - 1.0, 1e-3),
        e.step_s,
        e.per_seq_s,
        max(e.ingest_s, 1e-6),
        max(e.mixed_step_s, 1e-6),
        e.fp8_gemm,
    ]
    out: np.ndarray = np.log(np.asarray(vals, dtype=float))
    return out


def loss(rows: Sequence[Row], eff: Efficiency) -> float:
    """Sum of squared log errors: throughput (weight 2) and p50 ITL (weight 1) over ``rows``."""
    total = 0.0
    for row in rows:
        r = run_row(row, eff)
        if not (r.out_tok_s > 0 and r.itl_p50_ms > 0):
            return 1e9
        total += 2 * math.log(r.out_tok_s / row.out_tok_s) ** 2 + math.log(r.itl_p50_ms / row.itl_p50_ms) ** 2
    return total


#: plausible ranges (the fit stays inside them): fractions of datasheet peaks no real kernel beats, host
#: costs of the order vLLM's own profiles show. Order as ``_FIT_FIELDS``.
BOUNDS: dict[str, list[tuple[float, float]]] = {
    "gpu": [
        (0.3, 0.85),
        (0.2, 0.8),
        (0.5, 0.92),
        (1.0, 8.0),
        (2e-4, 1e-2),
        (1e-7, 5e-5),
        (1e-6, 2e-3),
        (1e-6, 2e-2),
        (0.3, 1.0),
    ],
    "cpu": [
        (0.01, 0.5),
        (0.01, 0.5),
        (0.1, 0.9),
        (1.0, 8.0),
        (1e-4, 2e-2),
        (1e-7, 2e-3),
        (1e-6, 2e-2),
        (1e-6, 2e-2),
        (0.8, 0.8001),
    ],
}


def fit(
    rows: Sequence[Row],
    base: Efficiency,
    bounds: Sequence[tuple[float, float]],
    log: Callable[[str], None] = print,
    iters: int = 400,
) -> Efficiency:
    """Bounded Nelder-Mead over the log of the constants in ``_FIT_FIELDS``, all rows of one platform at
    once (duplicate runs of one configuration count once)."""
    from scipy.optimize import minimize

    uniq: dict[str, Row] = {}
    for row in rows:  # duplicated runs of one config carry no extra information for the model
        uniq.setdefault(repr(sorted(row.flags.items())) + repr(row.workload), row)
    todo = list(uniq.values())

    def to_x(i: int, v: float) -> float:  # the search runs on logs; overlap_p on log(p - 1)
        return math.log(max(v - 1.0, 1e-3) if i == 3 else v)

    lb = [to_x(i, lo) for i, (lo, _) in enumerate(bounds)]
    ub = [to_x(i, hi) for i, (_, hi) in enumerate(bounds)]
    x0 = np.clip(_pack(base), lb, ub)
    res = minimize(
        lambda x: loss(todo, _unpack(x, base)),
        x0,
        method="Nelder-Mead",
        bounds=list(zip(lb, ub, strict=True)),
        options={"maxiter": iters, "xatol": 1e-3, "fatol": 1e-5},
    )
    eff = _unpack(res.x, base)
    log(
        f"fit over {len(todo)} configurations: loss {res.fun:.4f} -> "
        + ", ".join(f"{k}={getattr(eff, k):.4g}" for k in _FIT_FIELDS)
    )
    return eff


# ---- report ------------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| platform | config | measured tok/s | sim tok/s | error | measured ITL p50 ms | sim ITL p50 ms | error "
        "| KV tokens measured / sim | not fitted: TTFT p50 ms measured / sim | ITL p99 ms measured / sim |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        e_t = (r.out_tok_s / r.row.out_tok_s - 1) * 100
        e_i = (r.itl_p50_ms / r.row.itl_p50_ms - 1) * 100
        kv = f"{r.row.kv_tokens:,} / {r.kv_tokens:,}" if r.row.kv_tokens else f"- / {r.kv_tokens:,}"
        lines.append(
            f"| {r.row.hardware} | {r.row.label} | {r.row.out_tok_s:,.1f} | {r.out_tok_s:,.1f} | {e_t:+.1f}% "
            f"| {r.row.itl_p50_ms:.2f} | {r.itl_p50_ms:.2f} | {e_i:+.1f}% | {kv} "
            f"| {r.row.ttft_p50_ms:,.0f} / {r.ttft_p50_ms:,.0f} | {r.row.itl_p99_ms:.1f} / {r.itl_p99_ms:.1f} |"
        )
    lines.append("")
    for name, group in (
        ("GPU rows", [r for r in results if r.row.platform == "gpu"]),
        ("CPU rows", [r for r in results if r.row.platform == "cpu"]),
        ("all rows", list(results)),
    ):
        if not group:
            continue
        rho = spearman([r.row.out_tok_s for r in group], [r.out_tok_s for r in group])
        worst = max(abs(r.out_tok_s / r.row.out_tok_s - 1) for r in group) * 100
        worst_i = max(abs(r.itl_p50_ms / r.row.itl_p50_ms - 1) for r in group) * 100
        within = sum(abs(r.out_tok_s / r.row.out_tok_s - 1) <= 0.15 for r in group)
        lines.append(
            f"- {name}: throughput Spearman rho = {rho:.3f}; worst throughput error {worst:.1f}% "
            f"({within}/{len(group)} rows within 15%); worst p50 ITL error {worst_i:.1f}%."
        )
    return lines


#: hand-set starting points (before any fit): leave-one-out starts here, not from the shipped constants,
#: which have seen the held-out row
PRIOR: dict[str, Efficiency] = {
    "gpu": Efficiency(
        gemm=0.6,
        attention=0.4,
        memory=0.8,
        overlap_p=2.0,
        step_s=2e-3,
        per_seq_s=2e-5,
        ingest_s=1e-4,
        mixed_step_s=1e-3,
        fp8_gemm=0.8,
    ),
    "cpu": Efficiency(
        gemm=0.1,
        attention=0.1,
        memory=0.5,
        overlap_p=1.0,
        step_s=3e-3,
        per_seq_s=8e-4,
        ingest_s=1e-4,
        mixed_step_s=1e-6,
        fp8_gemm=0.8,
    ),
}


def leave_one_out(rows: Sequence[Row], log: Callable[[str], None] = print, iters: int = 400) -> list[str]:
    """Out-of-sample check: for each distinct configuration, refit each platform's constants without it
    (starting from :data:`PRIOR`) and predict it. Returns markdown lines."""
    lines = [
        "| platform | held-out config | measured tok/s | predicted tok/s | error | measured ITL p50 | predicted | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for platform, base in PRIOR.items():
        group = [r for r in rows if r.platform == platform]
        keys = {repr(sorted(r.flags.items())) + repr(r.workload): r for r in group}
        for key, held in keys.items():
            train = [r for r in group if repr(sorted(r.flags.items())) + repr(r.workload) != key]
            eff = fit(train, base, BOUNDS[platform], log=lambda _: None, iters=iters)
            res = run_row(held, eff)
            e_t = (res.out_tok_s / held.out_tok_s - 1) * 100
            e_i = (res.itl_p50_ms / held.itl_p50_ms - 1) * 100
            line = (
                f"| {held.hardware} | {held.label} | {held.out_tok_s:,.1f} | {res.out_tok_s:,.1f} | {e_t:+.1f}% "
                f"| {held.itl_p50_ms:.2f} | {res.itl_p50_ms:.2f} | {e_i:+.1f}% |"
            )
            log(line)
            lines.append(line)
    return lines


def write_doc(lines: Sequence[str], doc: Path = DOC, start: str = START, end: str = END) -> None:
    """Replace the text between the ``start``/``end`` markers in ``doc`` (append a section when absent)."""
    block = "\n".join([start, *lines, end])
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Simulator\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Calibration\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder with h200-llama8b.csv and cpu-tiny.csv")
    ap.add_argument("--fit", action="store_true", help="refit the efficiency constants before reporting")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/simulator.md alone")
    ap.add_argument(
        "--loo",
        action="store_true",
        help="also the leave-one-out check (refits once per configuration; minutes)",
    )
    args = ap.parse_args(argv)
    rows = load_rows(args.data)
    if not rows:
        print(f"no calibration rows under {args.data}", file=sys.stderr)
        return 1
    effs: dict[str, Efficiency | None] = {"gpu": None, "cpu": None}
    if args.fit:
        for platform, base in (("gpu", GPU_EFFICIENCY), ("cpu", CPU_EFFICIENCY)):
            group = [r for r in rows if r.platform == platform]
            if group:
                effs[platform] = fit(group, base, BOUNDS[platform])
    results = [run_row(r, effs[r.platform]) for r in rows]
    lines = table(results)
    print("\n".join(lines))
    if not args.no_write:
        write_doc(lines)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")
    if args.loo:
        print("\nleave-one-out (refit without the row, then predict it):")
        loo = leave_one_out(rows)
        if not args.no_write:
            write_doc(
                ["Leave-one-out (each configuration predicted by constants fitted without it):", "", *loo],
                start="<!-- calibration-loo:start -->",
                end="<!-- calibration-loo:end -->",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
