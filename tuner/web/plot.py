"""A :class:`tuner.report.plot.Picture` as a plotly figure (a JSON-able ``{"data", "layout"}``) for the
dashboard, drawn in the browser by the plotly.js that the installed plotly package ships. Pure.

The same picture as ``tuner pareto --plot FILE.html`` (:mod:`tuner.report.plot_html`): one panel per latency,
every configuration's curve, the step-level front, each SLO limit as a dashed line, the baseline marked (black,
dashed, stars). Unlike the file, the curves of the configurations other than the baseline are one trace
per panel (curves apart by gaps), so that a study of 1,000 trials stays a handful of traces; the hover still
names each point's trial, load, figures and flags. Load labels are left to the hover.
"""

from __future__ import annotations

from typing import Any

from tuner.report.plot import FRONT_NAME, Panel, Picture, axis_label


def figure(pic: Picture) -> dict[str, Any]:
    """The plotly figure of ``pic`` (see the module docstring)."""
    n = max(1, len(pic.panels))
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "title": {"text": pic.title, "font": {"size": 14}},
        "template": "plotly_white",
        "grid": {"rows": 1, "columns": n, "pattern": "independent"},
        "hovermode": "closest",
        "margin": {"t": 60, "b": 60, "l": 60, "r": 20},
        "legend": {"orientation": "h", "y": -0.2},
        "shapes": [],
        "annotations": [],
        "coloraxis": {
            "colorscale": "Viridis",
            "cmin": 0.0,
            "cmax": 1.0,
            "colorbar": {
                "title": {"text": f"load ({pic.load_axis})"},
                "tickvals": [t for t, _ in pic.scale],
                "ticktext": [text for _, text in pic.scale],
                "len": 0.8,
            },
        },
    }
    for i, panel in enumerate(pic.panels, start=1):
        suffix = "" if i == 1 else str(i)
        data += _traces(panel, f"x{suffix}", f"y{suffix}", first=i == 1)
        layout[f"xaxis{suffix}"] = {"title": {"text": "output_throughput (tok/s)"}}
        layout[f"yaxis{suffix}"] = {"title": {"text": axis_label(panel.metric)}}
        if panel.limit is not None:
            layout["shapes"].append(
                {
                    "type": "line",
                    "xref": f"x{suffix} domain",
                    "yref": f"y{suffix}",
                    "x0": 0,
                    "x1": 1,
                    "y0": panel.limit,
                    "y1": panel.limit,
                    "line": {"color": "red", "dash": "dash"},
                }
            )
            layout["annotations"].append(
                {
                    "text": f"SLO {panel.metric} {panel.limit:g} ms",
                    "xref": f"x{suffix} domain",
                    "yref": f"y{suffix}",
                    "x": 0,
                    "y": panel.limit,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "font": {"color": "red", "size": 11},
                }
            )
    return {"data": data, "layout": layout}


def front_points(pic: Picture) -> int:
    """Points of the step-level front in the first panel (what the page says it shows)."""
    return len(pic.panels[0].front) if pic.panels else 0


def _traces(panel: Panel, xaxis: str, yaxis: str, first: bool) -> list[dict[str, Any]]:
    others = [c for c in panel.curves if not c.is_baseline]
    base = [c for c in panel.curves if c.is_baseline]
    out: list[dict[str, Any]] = []
    for curves, name, line, size, symbol in (
        (others, "configurations", {"color": "silver", "width": 1}, 7, "circle"),
        (base, "baseline", {"color": "black", "dash": "dash", "width": 2}, 12, "star"),
    ):
        if not curves:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        shade: list[float | None] = []
        hover: list[str] = []
        symbols: list[str] = []
        for c in curves:
            xs += [*c.x, None]
            ys += [*c.y, None]
            shade += [*c.shade, None]
            hover += [*c.hover, ""]
            symbols += [*("x" if cut else symbol for cut in c.cut), symbol]
        out.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "x": xs,
                "y": ys,
                "xaxis": xaxis,
                "yaxis": yaxis,
                "line": line,
                "connectgaps": False,
                "marker": {"color": shade, "coloraxis": "coloraxis", "size": size, "symbol": symbols},
                "text": hover,
                "hovertemplate": "%{text}<extra></extra>",
                "legendgroup": name,
                "showlegend": first,
            }
        )
    if panel.front:
        out.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": FRONT_NAME,
                "x": [p[0] for p in panel.front],
                "y": [p[1] for p in panel.front],
                "xaxis": xaxis,
                "yaxis": yaxis,
                "line": {"color": "crimson", "width": 2.5, "shape": "vh"},
                "marker": {"symbol": "circle-open", "size": 13, "color": "crimson"},
                "hoverinfo": "skip",
                "legendgroup": "front",
                "showlegend": first,
            }
        )
    return out
