"""Pareto rows -> a rich table for a person, or CSV for a spreadsheet. Pure rendering (no study access).

The trial-level front (:func:`rich_table`, :func:`to_csv`): trial, every param that appears in a row (in
first-seen order), each objective value, and its percent change against the baseline; in the table, once
some configuration was re-measured (``tuner confirm``), the first objective's mean ± half range and count
over each trial and its repeats. The step-level front
(:func:`steps_table`, :func:`steps_csv`, rows of :func:`tuner.report.envelope.step_row`): trial, load,
output throughput, each latency with its SLO verdict, the step's verdict, the params. The baseline row is
marked ``(baseline)``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from tuner.report.envelope import load_text
from tuner.report.fmt import fmt_num
from tuner.report.noise import Spread
from tuner.report.pareto import unit


def _param_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in rows:
        for k in r["params"]:
            if k not in names:
                names.append(k)
    return names


def _metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(rows[0]["values"]) if rows else []


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    return fmt_num(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def rich_table(rows: Sequence[dict[str, Any]], title: str = "Pareto front") -> Table:
    """The front as a :class:`rich.table.Table` (empty rows: a table with a caption saying so)."""
    params = _param_names(rows)
    metrics = _metric_names(rows)
    table = Table(title=title, caption=None if rows else "no feasible trial yet")
    table.add_column("trial", justify="right")
    for p in params:
        table.add_column(p)
    for m in metrics:
        table.add_column(f"{m} ({unit(m)})" if unit(m) else m, justify="right")
        table.add_column("vs base", justify="right")
    repeated = any((r.get("spread") or {}).get("n", 1) > 1 for r in rows)
    if repeated:
        table.add_column(f"{metrics[0]} over repeats", justify="right")
    for r in rows:
        cells = [f"{r['trial']}" + (" (baseline)" if r.get("is_baseline") else "")]
        cells += [_num(r["params"].get(p)) for p in params]
        for m in metrics:
            cells += [_num(r["values"].get(m)), _pct(r["vs_baseline"].get(m))]
        if repeated:
            cells.append(_spread(r.get("spread")))
        table.add_row(*cells)
    return table


def _spread(s: dict[str, Any] | None) -> str:
    """``4,504 ± 40 (n=3)``: :meth:`Spread.describe` and the count; ``-`` without one."""
    return "-" if not s else f"{Spread(**s).describe()} (n={s['n']})"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The front as CSV: ``trial, is_baseline, <params>, <metric>, <metric>_vs_baseline_pct ...``."""
    params = _param_names(rows)
    metrics = _metric_names(rows)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["trial", "is_baseline", *params, *[c for m in metrics for c in (m, f"{m}_vs_baseline_pct")]])
    for r in rows:
        line: list[Any] = [r["trial"], bool(r.get("is_baseline")), *[r["params"].get(p, "") for p in params]]
        for m in metrics:
            change = r["vs_baseline"].get(m)
            line += [r["values"].get(m), "" if change is None else round(change, 3)]
        w.writerow(line)
    return out.getvalue()


def _verdict(figure: Any, ok: bool | None) -> str:
    """``816 ok`` / ``1626 OVER`` (no limit on it: the figure alone)."""
    if ok is None:
        return _num(figure)
    return f"{_num(figure)} {'ok' if ok else 'OVER'}"


def steps_table(rows: Sequence[dict[str, Any]], title: str = "Step-level front") -> Table:
    """The step-level front as a :class:`rich.table.Table` (lowest throughput first, as given)."""
    params = _param_names(rows)
    latencies = list(rows[0]["latency"]) if rows else []
    table = Table(title=title, caption=None if rows else "no measured step yet")
    for name, right in (("trial", True), ("load", False), ("output_throughput (tok/s)", True)):
        table.add_column(name, justify="right" if right else "left")
    for m in latencies:
        table.add_column(f"{m} ({unit(m)})" if unit(m) else m, justify="right")
    table.add_column("SLO")
    for p in params:
        table.add_column(p)
    for r in rows:
        cells = [f"{r['trial']}" + (" (baseline)" if r.get("is_baseline") else ""), load_text(r["load"])]
        cells.append(_num(r["output_throughput"]))
        cells += [_verdict(r["latency"].get(m), r["within_slo"].get(m)) for m in latencies]
        cells.append(("met" if r["meets_slo"] else "broken") + (", scored" if r.get("scored") else ""))
        cells += [_num(r["params"].get(p)) for p in params]
        table.add_row(*cells)
    return table


def steps_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The step-level front as CSV: ``trial, is_baseline, load, output_throughput, <latency>,
    <latency>_within_slo ..., meets_slo, scored, <params>`` (``load`` as the table writes it)."""
    params = _param_names(rows)
    latencies = list(rows[0]["latency"]) if rows else []
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    lat_cols = [c for m in latencies for c in (m, f"{m}_within_slo")]
    w.writerow(
        ["trial", "is_baseline", "load", "output_throughput", *lat_cols, "meets_slo", "scored", *params]
    )
    for r in rows:
        line: list[Any] = [
            r["trial"],
            bool(r.get("is_baseline")),
            load_text(r["load"]),
            r["output_throughput"],
        ]
        for m in latencies:
            figure, ok = r["latency"].get(m), r["within_slo"].get(m)
            line += ["" if figure is None else figure, "" if ok is None else ok]
        line += [r["meets_slo"], bool(r.get("scored")), *[r["params"].get(p, "") for p in params]]
        w.writerow(line)
    return out.getvalue()
