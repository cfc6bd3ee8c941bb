"""The study as a picture: every trial, the front, the baseline and the SLO lines. HTML (plotly) or PNG
(matplotlib), chosen by the file's extension.

Axes: with two or more objectives, x is the first minimised objective (a latency) and y the first maximised
one (a throughput); otherwise the first two objectives; with one objective, x is the trial number. Markers:
feasible trials (circles), measured trials that broke an SLO (crosses), failed trials (grey ``x`` on the
x axis at the right edge — their told values are penalties, not measurements — labelled with the failure
class), the front (joined by a line), the baseline (a star). An SLO limit on an axis's metric is a dashed
line. In capacity mode each front trial's load steps are drawn as a thin curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner.errors import StorageError, UsageError
from tuner.report.pareto import Point, metric_names, points, unit
from tuner.search.record import read_study

FORMATS = (".html", ".png")


@dataclass(frozen=True)
class _Axes:
    x: int | None  # objective index, None: trial number
    y: int
    x_name: str
    y_name: str
    x_slo: float | None
    y_slo: float | None


def check_target(path: str | Path) -> Path:
    """Validate a plot file name (before anything is opened). Raises :class:`UsageError`."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UsageError(f"--plot {path}: the file must end in .html or .png")
    if p.parent != Path("") and not p.parent.exists():
        raise UsageError(f"--plot {path}: folder {p.parent} does not exist")
    return p


def _slo_limits(study: optuna.Study) -> dict[str, float]:
    spec = read_study(study).spec or {}
    slo = spec.get("slo")
    if not isinstance(slo, dict):
        return {}
    return {k.removesuffix("_ms"): float(v) for k, v in slo.items() if isinstance(v, int | float)}


def _axes(study: optuna.Study) -> _Axes:
    names = metric_names(study)
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    limits = _slo_limits(study)
    if len(names) == 1:
        return _Axes(None, 0, "trial", names[0], None, limits.get(names[0]))
    y = maximize.index(True) if True in maximize else 0
    rest = [i for i in range(len(names)) if i != y]
    x = next((i for i in rest if not maximize[i]), rest[0])
    return _Axes(x, y, names[x], names[y], limits.get(names[x]), limits.get(names[y]))


def _label(name: str) -> str:
    return f"{name} ({unit(name)})" if unit(name) else name


def _xy(p: Point, ax: _Axes) -> tuple[float, float]:
    return (float(p.number) if ax.x is None else p.values[ax.x], p.values[ax.y])


def _fail_x(pts: Sequence[Point], ax: _Axes) -> float:
    """Where failed trials sit on the x axis: just right of every measured point and the SLO line."""
    if ax.x is None:
        return 0.0
    xs = [p.values[ax.x] for p in pts if p.kind != "failed"]
    edge = max([*xs, ax.x_slo or 0.0, 1.0])
    return edge * 1.15


def _series(pts: Sequence[Point], ax: _Axes) -> dict[str, Any]:
    fail_x = _fail_x(pts, ax)
    out: dict[str, Any] = {
        "feasible": [],
        "infeasible": [],
        "failed": [],
        "front": [],
        "baseline": [],
        "curves": [],
    }
    for p in pts:
        if p.kind == "failed":
            x = float(p.number) if ax.x is None else fail_x
            out["failed"].append((x, 0.0, f"#{p.number} {p.label}"))
            continue
        x, y = _xy(p, ax)
        out[p.kind].append((x, y, f"#{p.number}"))
        if p.on_front:
            out["front"].append((x, y, f"#{p.number}"))
            curve = [(s.get(ax.x_name), s.get(ax.y_name)) for s in p.steps] if ax.x is not None else []
            curve = [(cx, cy) for cx, cy in curve if cx is not None and cy is not None]
            if len(curve) > 1:
                out["curves"].append(curve)
        if p.is_baseline:
            out["baseline"].append((x, y, f"#{p.number} baseline"))
    out["front"].sort()
    return out


def _group(pts: Sequence[tuple[float, float, str]]) -> dict[tuple[float, float], list[str]]:
    """Labels of points that share a position (failed trials all sit at one spot)."""
    out: dict[tuple[float, float], list[str]] = {}
    for x, y, label in pts:
        out.setdefault((x, y), []).append(label)
    return out


def write_plot(study: optuna.Study, path: str | Path) -> Path:
    """Write the plot of ``study`` to ``path`` (.html or .png) and return it."""
    p = check_target(path)
    ax = _axes(study)
    series = _series(points(study), ax)
    title = f"{study.study_name}: {ax.y_name} vs {ax.x_name}"
    try:
        if p.suffix.lower() == ".html":
            _plotly(series, ax, title, p)
        else:
            _matplotlib(series, ax, title, p)
    except OSError as e:
        raise StorageError(f"cannot write {p}: {e.strerror or e}") from None
    return p


def _plotly(series: dict[str, Any], ax: _Axes, title: str, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for curve in series["curves"]:
        fig.add_trace(
            go.Scatter(
                x=[c[0] for c in curve],
                y=[c[1] for c in curve],
                mode="lines",
                line={"width": 1, "color": "lightblue"},
                showlegend=False,
                hoverinfo="skip",
            )
        )
    styles = {
        "feasible": {"symbol": "circle", "color": "royalblue", "size": 9},
        "infeasible": {"symbol": "x", "color": "orange", "size": 9},
        "failed": {"symbol": "x-thin-open", "color": "grey", "size": 10},
        "baseline": {"symbol": "star", "color": "black", "size": 16},
    }
    names = {"feasible": "feasible", "infeasible": "SLO broken", "failed": "failed", "baseline": "baseline"}
    for kind in ("feasible", "infeasible", "failed", "baseline"):
        pts = series[kind]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[q[0] for q in pts],
                    y=[q[1] for q in pts],
                    text=[q[2] for q in pts],
                    mode="markers",
                    name=names[kind],
                    marker=styles[kind],
                    hovertemplate="%{text}<br>x=%{x:.4g}<br>y=%{y:.4g}<extra></extra>",
                )
            )
    front = series["front"]
    if front:
        fig.add_trace(
            go.Scatter(
                x=[q[0] for q in front],
                y=[q[1] for q in front],
                mode="lines+markers",
                name="Pareto front",
                line={"color": "crimson", "shape": "hv" if ax.x is not None else "linear"},
                marker={"symbol": "circle-open", "size": 14, "color": "crimson"},
            )
        )
    if ax.x_slo is not None:
        fig.add_vline(
            x=ax.x_slo, line_dash="dash", line_color="red", annotation_text=f"SLO {ax.x_name} {ax.x_slo:g}"
        )
    if ax.y_slo is not None:
        fig.add_hline(
            y=ax.y_slo, line_dash="dash", line_color="red", annotation_text=f"SLO {ax.y_name} {ax.y_slo:g}"
        )
    fig.update_layout(
        title=title, xaxis_title=_label(ax.x_name), yaxis_title=_label(ax.y_name), template="plotly_white"
    )
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def _matplotlib(series: dict[str, Any], ax: _Axes, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 5.5), dpi=120)
    try:
        for curve in series["curves"]:
            axis.plot([c[0] for c in curve], [c[1] for c in curve], color="lightblue", linewidth=1, zorder=1)
        styles: dict[str, dict[str, Any]] = {
            "feasible": {"marker": "o", "color": "royalblue", "label": "feasible"},
            "infeasible": {"marker": "x", "color": "orange", "label": "SLO broken"},
            "failed": {"marker": "x", "color": "grey", "label": "failed"},
            "baseline": {"marker": "*", "color": "black", "label": "baseline", "s": 160},
        }
        for kind in ("feasible", "infeasible", "failed", "baseline"):
            pts = series[kind]
            if pts:
                axis.scatter([q[0] for q in pts], [q[1] for q in pts], zorder=3, **styles[kind])
        for (x, y), labels in _group(series["failed"]).items():
            axis.annotate(
                ", ".join(labels)[:80],
                (x, y),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=7,
                color="grey",
            )
        front = series["front"]
        if front:
            axis.step(
                [q[0] for q in front],
                [q[1] for q in front],
                where="post" if ax.x is not None else "mid",
                color="crimson",
                label="Pareto front",
                zorder=2,
            )
            axis.scatter(
                [q[0] for q in front],
                [q[1] for q in front],
                s=140,
                facecolors="none",
                edgecolors="crimson",
                zorder=4,
            )
        if ax.x_slo is not None:
            axis.axvline(ax.x_slo, linestyle="--", color="red", label=f"SLO {ax.x_name} {ax.x_slo:g}")
        if ax.y_slo is not None:
            axis.axhline(ax.y_slo, linestyle="--", color="red", label=f"SLO {ax.y_name} {ax.y_slo:g}")
        axis.set_xlabel(_label(ax.x_name))
        axis.set_ylabel(_label(ax.y_name))
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
