"""Pareto rows -> a rich table for a person, or CSV for a spreadsheet. Pure rendering (no study access).

Columns: trial, every param that appears in a row (in first-seen order), each objective value, and its
percent change against the baseline. The baseline row is marked ``(baseline)``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from tuner.report.fmt import fmt_num
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
    for r in rows:
        cells = [f"{r['trial']}" + (" (baseline)" if r.get("is_baseline") else "")]
        cells += [_num(r["params"].get(p)) for p in params]
        for m in metrics:
            cells += [_num(r["values"].get(m)), _pct(r["vs_baseline"].get(m))]
        table.add_row(*cells)
    return table


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
