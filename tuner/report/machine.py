"""The JSON and CSV forms of the reports: report rows in the names of :mod:`tuner.report.names` (vLLM's
``p99_ttft_ms`` style), floats rounded (:func:`tuner.report.names.rounded`), CSV headers with units and
``true``/``false`` in lowercase. Pure (no study access).

A front row (:func:`front_json`, one per row of :func:`tuner.report.pareto.report_rows`)::

    {"trial": 15, "is_baseline": false, "on_front": true, "params": {...}, "flags": {...},
     "load": {"concurrency": 56, "requests": 299},
     "objectives": {"output_throughput": 5733.0, "p99_ttft_ms": 819.6},
     "vs_baseline_pct": {"output_throughput": 63.2, "p99_ttft_ms": 6.8},
     "slo": {"p99_ttft_ms": {"value": 819.6, "limit": 1000.0, "within": true}}, "meets_slo": true,
     "metrics": {"output_throughput": ..., "p99_ttft_ms": ..., ...}, "spread": null,
     "steps": [{"load": {...}, "output_throughput": ..., "slo": {...}, "meets_slo": true}]}

A step of the step-level front (:func:`steps_json`) has ``trial``, ``is_baseline``, ``load``,
``output_throughput``, each latency by key, ``slo`` (as above), ``meets_slo``, ``scored``, ``pruned``,
``params``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from tuner.report.envelope import load_level
from tuner.report.names import flat_summary, key, name, rounded
from tuner.report.table import param_names


def _checks(slo: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        key(m): {
            "value": rounded(c.get("value")),
            "limit": rounded(c.get("limit")),
            "within": c.get("within"),
        }
        for m, c in slo.items()
    }


def _step(point: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"load": dict(point.get("load") or {})}
    for m, v in point.items():
        if m not in ("load", "slo"):
            out[key(m)] = rounded(v)
    if "slo" in point:
        out["slo"] = _checks(point["slo"])
        out["meets_slo"] = all(c["within"] for c in point["slo"].values())
    return out


def front_json(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The front's rows for ``tuner pareto --format json`` (see the module docstring)."""
    out = []
    for r in rows:
        d: dict[str, Any] = {
            "trial": r["trial"],
            "is_baseline": bool(r.get("is_baseline")),
            "on_front": bool(r.get("on_front", True)),
            "params": dict(r["params"]),
            "flags": dict(r.get("flags") or {}),
            "load": dict(r.get("load") or {}),
            "objectives": {key(m): rounded(v) for m, v in r["values"].items()},
            "vs_baseline_pct": {key(m): _pct(v) for m, v in r["vs_baseline"].items()},
            "slo": _checks(r.get("slo") or {}),
            "meets_slo": r.get("meets_slo"),
            "metrics": flat_summary(r.get("metrics") or {}),
            "spread": r.get("spread"),
        }
        if "steps" in r:
            d["steps"] = [_step(s) for s in r["steps"]]
        out.append(d)
    return out


def _pct(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _cell(v: Any) -> Any:
    """A CSV cell: ``true``/``false``, a rounded float, "" for None."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else rounded(v)


def _load_cells(load: Mapping[str, Any]) -> list[Any]:
    level = load_level(load)
    return [level if "concurrency" in load else "", level if "request_rate" in load else ""]


def front_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The front as CSV: ``trial, is_baseline, on_front, <flags>, load_concurrency, load_request_rate_rps``,
    each objective (``output_throughput_tok_s``, ``p99_ttft_ms``...) and its ``_vs_baseline_pct``, each SLO
    figure not already a column, its ``_limit`` and ``_within_slo``, then ``meets_slo``."""
    params = param_names(rows)
    metrics = list(rows[0]["values"]) if rows else []
    slo = list(rows[0].get("slo") or {}) if rows else []
    head = ["trial", "is_baseline", "on_front", *params, "load_concurrency", "load_request_rate_rps"]
    for m in metrics:
        head += [name(m).csv_header(), f"{key(m)}_vs_baseline_pct"]
    for m in slo:
        head += ([] if m in metrics else [name(m).csv_header()]) + [f"{key(m)}_limit", f"{key(m)}_within_slo"]
    head.append("meets_slo")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        line: list[Any] = [r["trial"], bool(r.get("is_baseline")), bool(r.get("on_front", True))]
        line += [r["params"].get(p) for p in params] + _load_cells(r.get("load") or {})
        for m in metrics:
            line += [r["values"].get(m), _pct(r["vs_baseline"].get(m))]
        for m in slo:
            c = r["slo"][m]
            line += ([] if m in metrics else [c["value"]]) + [c["limit"], c["within"]]
        line.append(r.get("meets_slo"))
        w.writerow([_cell(v) for v in line])
    return out.getvalue()


def steps_json(rows: Sequence[Mapping[str, Any]], slo: Mapping[str, float]) -> list[dict[str, Any]]:
    """The step-level front's rows (:func:`tuner.report.envelope.step_row`) for ``--format json``; ``slo``:
    the study's limits (metric -> ms)."""
    out = []
    for r in rows:
        d: dict[str, Any] = {
            "trial": r["trial"],
            "is_baseline": bool(r["is_baseline"]),
            "load": dict(r["load"]),
            "output_throughput": rounded(r["output_throughput"]),
        }
        d.update({key(m): rounded(v) for m, v in r["latency"].items()})
        d["slo"] = {
            key(m): {
                "value": rounded(r["latency"].get(m)),
                "limit": rounded(limit),
                "within": r["within_slo"].get(m),
            }
            for m, limit in slo.items()
        }
        d.update(meets_slo=r["meets_slo"], scored=r["scored"], pruned=r["pruned"], params=dict(r["params"]))
        out.append(d)
    return out


def steps_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The step-level front as CSV: ``trial, is_baseline, load_concurrency, load_request_rate_rps,
    output_throughput_tok_s``, each latency (``p99_ttft_ms``) and its ``_within_slo``, ``meets_slo``,
    ``scored``, the flags."""
    params = param_names(rows)
    latencies = list(rows[0]["latency"]) if rows else []
    head = ["trial", "is_baseline", "load_concurrency", "load_request_rate_rps", "output_throughput_tok_s"]
    head += [c for m in latencies for c in (name(m).csv_header(), f"{key(m)}_within_slo")]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*head, "meets_slo", "scored", *params])
    for r in rows:
        line: list[Any] = [r["trial"], r["is_baseline"], *_load_cells(r["load"]), r["output_throughput"]]
        for m in latencies:
            line += [r["latency"].get(m), r["within_slo"].get(m)]
        line += [r["meets_slo"], bool(r.get("scored")), *[r["params"].get(p) for p in params]]
        w.writerow([_cell(v) for v in line])
    return out.getvalue()
