"""A :class:`tuner.report.plot.Picture` as an interactive HTML page (plotly).

One trace per configuration and panel (legend: the trial; clicking it hides the configuration in every
panel), one per panel for the front, one per panel for each kind of label. plotly.js is not embedded: the
page loads ``plotly.min.js`` from its own folder, which plotly writes there once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.report.plot import FRONT_NAME, Panel, Picture, axis_label

COLOURS = "Viridis"


def write_html(pic: Picture, path: Path) -> None:
    """Draw ``pic`` as subplots side by side and write ``path`` (and ``plotly.min.js`` beside it)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = max(1, len(pic.panels))
    fig = make_subplots(rows=1, cols=n, subplot_titles=[p.metric for p in pic.panels] or [""])
    for col, panel in enumerate(pic.panels, start=1):
        for trace in _traces(go, panel, first=col == 1):
            fig.add_trace(trace, row=1, col=col)
        if panel.limit is not None:
            fig.add_hline(
                y=panel.limit,
                line_dash="dash",
                line_color="red",
                annotation_text=f"SLO {panel.metric} {panel.limit:g} ms",
                annotation_position="top left",
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="output_throughput (tok/s)", row=1, col=col)
        fig.update_yaxes(title_text=axis_label(panel.metric), row=1, col=col)
    fig.update_layout(
        title=pic.title,
        template="plotly_white",
        coloraxis={
            "colorscale": COLOURS,
            "cmin": 0.0,
            "cmax": 1.0,
            "colorbar": {
                "title": {"text": f"load<br>({pic.load_axis})"},
                "tickvals": [t for t, _ in pic.scale],
                "ticktext": [text for _, text in pic.scale],
            },
        },
        legend={"title": {"text": "trial (click to hide)"}},
        margin={"b": 90},
    )
    if pic.note:
        fig.add_annotation(
            text=pic.note, xref="paper", yref="paper", x=0, y=-0.16, showarrow=False, font={"color": "grey"}
        )
    fig.write_html(str(path), include_plotlyjs="directory", full_html=True)


def _traces(go: Any, panel: Panel, first: bool) -> list[Any]:
    out: list[Any] = []
    for c in panel.curves:
        name = f"#{c.trial}" + (" baseline" if c.is_baseline else "")
        out.append(
            go.Scatter(
                x=c.x,
                y=c.y,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=first,
                line={"color": "black", "dash": "dash", "width": 2}
                if c.is_baseline
                else {"color": "silver", "width": 1},
                marker={
                    "color": c.shade,
                    "coloraxis": "coloraxis",
                    "size": 13 if c.is_baseline else 8,
                    "symbol": ["x" if cut else ("star" if c.is_baseline else "circle") for cut in c.cut],
                },
                text=c.hover,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    if panel.front:
        out.append(
            go.Scatter(
                x=[p[0] for p in panel.front],
                y=[p[1] for p in panel.front],
                mode="lines+markers",
                name=FRONT_NAME,
                legendgroup="front",
                showlegend=first,
                line={"color": "crimson", "width": 2.5, "shape": "vh"},
                marker={"symbol": "circle-open", "size": 14, "color": "crimson"},
                hoverinfo="skip",
            )
        )
    for labels, colour, where in (
        (panel.load_labels, "dimgrey", "bottom right"),
        (panel.trial_labels, "navy", "top right"),
    ):
        if labels:
            out.append(
                go.Scatter(
                    x=[q[0] for q in labels],
                    y=[q[1] for q in labels],
                    text=[q[2].replace("\n", "<br>") for q in labels],
                    mode="text",
                    textposition=where,
                    textfont={"color": colour, "size": 10},
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
    return out
