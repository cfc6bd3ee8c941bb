"""A :class:`tuner.report.plot.Picture` as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.report.plot import FRONT_NAME, Panel, Picture, axis_label

CMAP = "viridis"


def write_png(pic: Picture, path: Path) -> None:
    """Draw ``pic`` (:func:`figure`) and save it to ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(pic)
    try:
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)


def figure(pic: Picture) -> Any:
    """``pic`` as a matplotlib figure, one panel per latency side by side (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(pic.panels))
    fig, axes = plt.subplots(1, n, figsize=(7.5 * n, 6.2), dpi=110, squeeze=False)
    dots = None
    for panel, axis in zip(pic.panels, axes[0], strict=False):
        dots = _panel(axis, panel) or dots
    fig.suptitle(pic.title, fontsize=12)
    if dots is not None and pic.scale:
        bar = fig.colorbar(dots, ax=list(axes[0]), fraction=0.025, pad=0.01)
        bar.set_ticks([t for t, _ in pic.scale], labels=[text for _, text in pic.scale])
        bar.set_label(f"load ({pic.load_axis})")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower right", ncols=len(names) or 1, fontsize=8, frameon=False)
    foot = "Each curve: one configuration's steps in load order; colour and small numbers: the load."
    fig.text(0.01, 0.01, foot + (f"  {pic.note}" if pic.note else ""), fontsize=8, color="dimgrey")
    return fig


def _panel(axis: Any, panel: Panel) -> Any:
    """Draw one panel; return the last scatter (for the colour bar), or None when nothing was drawn."""
    dots = None
    for c in sorted(panel.curves, key=lambda c: c.is_baseline):
        style = {"color": "black", "linewidth": 1.6, "linestyle": "--"} if c.is_baseline else {}
        axis.plot(c.x, c.y, **({"color": "silver", "linewidth": 1.0} | style), zorder=1)
        for cut in (False, True):
            at = [i for i, c_ in enumerate(c.cut) if c_ == cut]
            if not at:
                continue
            edge = {} if cut else {"edgecolors": "black" if c.is_baseline else "none"}
            dots = axis.scatter(
                [c.x[i] for i in at],
                [c.y[i] for i in at],
                c=[c.shade[i] for i in at],
                cmap=CMAP,
                vmin=0.0,
                vmax=1.0,
                s=70 if c.is_baseline else 28,
                marker="x" if cut else ("*" if c.is_baseline else "o"),
                linewidths=1.2 if cut else 0.6,
                zorder=3,
                **edge,
            )
    if panel.front:
        xs, ys = zip(*panel.front, strict=True)
        axis.step(xs, ys, where="pre", color="crimson", linewidth=2, alpha=0.8, label=FRONT_NAME, zorder=2)
        axis.scatter(xs, ys, s=110, facecolors="none", edgecolors="crimson", linewidths=1.2, zorder=4)
    for x, y, text in panel.load_labels:
        axis.annotate(text, (x, y), textcoords="offset points", xytext=(5, -9), fontsize=7, color="dimgrey")
    right = max((x for x, _, _ in panel.trial_labels), default=0.0)
    left = min((x for c in panel.curves for x in c.x), default=0.0)
    for x, y, text in panel.trial_labels:
        flip = right > left and (x - left) / (right - left) > 0.7  # near the right edge: write leftwards
        axis.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(-7 if flip else 7, 4),
            ha="right" if flip else "left",
            fontsize=8,
            color="navy",
        )
    if panel.limit is not None:
        axis.axhline(panel.limit, linestyle="--", color="red", linewidth=1.2, label="SLO limit")
        axis.annotate(
            f"SLO {panel.metric} {panel.limit:g} ms",
            (0.01, panel.limit),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
            color="red",
        )
    axis.plot([], [], color="black", linestyle="--", marker="*", label="baseline")
    axis.plot([], [], color="silver", marker="o", label="a configuration")
    axis.set_xlabel("output_throughput (tok/s)")
    axis.set_ylabel(axis_label(panel.metric))
    axis.set_title(panel.metric, fontsize=10)
    axis.grid(alpha=0.3)
    return dots
