"""Report rows -> rich tables for a person. Pure rendering (no study access); the JSON and CSV forms are
:mod:`tuner.report.machine`'s, the metric names :mod:`tuner.report.names`'.

The trial-level front (:func:`rich_table`): see its docstring; every flag that appears in a row is a column
(in first-seen order). The step-level front (:func:`steps_table`, rows of
:func:`tuner.report.envelope.step_row`): trial, load, output throughput, each latency with its SLO verdict,
the step's verdict, the params. The baseline row is marked ``(baseline)`` (``base`` when narrow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from tuner.report.envelope import load_text
from tuner.report.fmt import fmt_num
from tuner.report.names import label, name, score_label, unit
from tuner.report.noise import Spread


def param_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
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
    if isinstance(v, bool):
        return "true" if v else "false"
    if not isinstance(v, int | float):
        return str(v)
    return fmt_num(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


#: below this many columns the front is printed in its narrow layout
NARROW_BELOW = 120
#: a baseline cell for a flag whose value the record does not hold: vLLM chose it
DEFAULT_WIDE, DEFAULT_NARROW = "vLLM default", "dflt"


def abbreviations(params: Sequence[str]) -> dict[str, str]:
    """Short column names for flags: the initials of a dashed name (``gpu-memory-utilization`` -> ``gmu``),
    the first five letters of one word (``quantization`` -> ``quant``); made unique by more letters."""
    out: dict[str, str] = {}
    for p in params:
        words = p.split("-")
        short = "".join(w[:1] for w in words) if len(words) > 1 else p[:5]
        extra = 1
        while short in out.values():
            short = "".join(w[:1] for w in words[:-1]) + words[-1][: 1 + extra] if len(words) > 1 else p
            extra += 1
            if extra > len(words[-1]):
                short = p
                break
        out[p] = short
    return out


def _param_cell(r: dict[str, Any], p: str, narrow: bool) -> str:
    if p in r["params"]:
        return _num(r["params"][p])
    if r.get("is_baseline"):
        flag = (r.get("flags") or {}).get(p)
        return _num(flag) if flag is not None else (DEFAULT_NARROW if narrow else DEFAULT_WIDE)
    return "-"


def _slo_cell(check: dict[str, Any] | None) -> str:
    if not check:
        return "-"
    return _num(check["value"]) + ("" if check["within"] else " over")


def rich_table(
    rows: Sequence[dict[str, Any]],
    title: str | None = None,
    *,
    width: int = NARROW_BELOW - 1,
    capacity: bool = False,
) -> Table:
    """The front (rows of :func:`tuner.report.pareto.report_rows`) as a :class:`rich.table.Table`: trial,
    each flag, the scored load, each objective (the first as :data:`tuner.report.names.CAPACITY` when
    ``capacity``) and each SLO figure with its limit in the header (``over`` beside a figure above it), each
    objective's change against the baseline, and once some configuration was re-measured the first
    objective's mean ± half range. Below :data:`NARROW_BELOW` columns: short flag names
    (:func:`abbreviations`, legend by :func:`legend`), two-line headers, the change of the first objective
    only, no borders between columns."""
    narrow = width < NARROW_BELOW
    params = param_names(rows)
    metrics = _metric_names(rows)
    slo = {m: c["limit"] for r in rows[:1] for m, c in (r.get("slo") or {}).items()}
    short = abbreviations(params) if narrow else {p: p for p in params}
    sep = "\n" if narrow else " "
    table = Table(
        title=title,
        caption=None if rows else "no feasible trial yet",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=narrow,
    )
    table.add_column("trial", justify="right")
    for p in params:
        table.add_column(short[p] if narrow else _two_lines(p))
    table.add_column("load" if narrow else "scored load", justify="right")
    shown = [*metrics, *(m for m in slo if m not in metrics)]
    changes = metrics[:1] if narrow else metrics
    for m in shown:
        n = name(m)
        limit = f" (<={slo[m]:g})" if m in slo else ""
        what = score_label(m, capacity) if m == metrics[0] else n.label
        table.add_column(f"{what}{sep}{n.unit}{limit}".rstrip(), justify="right")
        if m in changes:
            table.add_column(f"vs{sep}base", justify="right")
    # narrow: the repeats are listed under the table (:func:`legend`) instead of a column
    repeated = not narrow and any((r.get("spread") or {}).get("n", 1) > 1 for r in rows)
    if repeated:
        table.add_column(f"{label(metrics[0])} over repeats", justify="right")
    for r in rows:
        mark = (" base" if narrow else " (baseline)") if r.get("is_baseline") else ""
        cells = [f"{r['trial']}{mark}", *(_param_cell(r, p, narrow) for p in params)]
        cells.append(load_text(r.get("load") or {}, short=True))
        for m in shown:
            check = (r.get("slo") or {}).get(m)
            cells.append(_slo_cell(check) if check else _num(r["values"].get(m)))
            if m in changes:
                cells.append(_pct(r["vs_baseline"].get(m)))
        if repeated:
            cells.append(_spread(r.get("spread")))
        table.add_row(*cells)
    return table


def _two_lines(flag: str) -> str:
    """``gpu-memory-\\nutilization``: a dashed flag name broken at its middle dash."""
    words = flag.split("-")
    half = (len(words) + 1) // 2
    return flag if len(words) < 2 else "-".join(words[:half]) + "-\n" + "-".join(words[half:])


def legend(rows: Sequence[dict[str, Any]], width: int = NARROW_BELOW) -> str:
    """The key to a narrow table's short flag names and marks (empty for a wide table)."""
    if width >= NARROW_BELOW or not rows:
        return ""
    parts = [f"{s} = {p}" for p, s in abbreviations(param_names(rows)).items() if s != p]
    if any(r.get("is_baseline") for r in rows):
        parts.append(f"{DEFAULT_NARROW} = vLLM's default")
    parts.append("load = the scored step's concurrency (or req/s)")
    repeats = [
        f"#{r['trial']} {Spread(**r['spread']).describe()} over {r['spread']['n']}"
        for r in rows
        if (r.get("spread") or {}).get("n", 1) > 1
    ]
    if repeats:
        parts.append(f"tuner confirm's repeats (mean ± half the range): {', '.join(repeats)}")
    return "; ".join(parts)


def _spread(s: dict[str, Any] | None) -> str:
    """``4,504 ± 40 (n=3)``: :meth:`Spread.describe` and the count; ``-`` without a repeat."""
    if not s or s.get("n", 1) < 2:
        return "-"
    return f"{Spread(**s).describe()} (n={s['n']})"


def _verdict(figure: Any, ok: bool | None) -> str:
    """``816 ok`` / ``1626 OVER`` (no limit on it: the figure alone)."""
    if ok is None:
        return _num(figure)
    return f"{_num(figure)} {'ok' if ok else 'OVER'}"


def steps_table(rows: Sequence[dict[str, Any]], title: str | None = "Step-level front") -> Table:
    """The step-level front as a :class:`rich.table.Table` (lowest throughput first, as given)."""
    params = param_names(rows)
    latencies = list(rows[0]["latency"]) if rows else []
    table = Table(title=title, caption=None if rows else "no measured step yet")
    for col, right in (("trial", True), ("load", False), ("output_throughput (tok/s)", True)):
        table.add_column(col, justify="right" if right else "left")
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


def natural_width(table: Table) -> int:
    """The columns ``table`` takes when nothing constrains it."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def front_table(rows: Sequence[dict[str, Any]], width: int, capacity: bool = False) -> tuple[Table, int]:
    """The front's table for a terminal of ``width`` columns, and the width its layout was chosen for: the
    wide layout where it fits whole (and ``width`` is at least :data:`NARROW_BELOW`), else the narrow one."""
    if width >= NARROW_BELOW:
        wide = rich_table(rows, width=width, capacity=capacity)
        if natural_width(wide) <= width:
            return wide, width
    narrow = min(width, NARROW_BELOW - 1)
    return rich_table(rows, width=narrow, capacity=capacity), narrow
