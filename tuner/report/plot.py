"""The study as a picture: every configuration's latency-throughput curve and the envelope over them, one
panel per latency. HTML (plotly) or PNG (matplotlib), chosen by the file's extension.

A panel per latency the study follows (:attr:`tuner.report.envelope.StepView.latencies`: the primary
latency, then each SLO limit's metric); x is output throughput (tok/s), y the latency (ms). In each panel:

* each measured configuration's curve: its steps joined in load order (grey; the baseline black), each
  point coloured by its load (one colour scale for the study) and labelled with it, a step cut short once
  its verdict was settled drawn as a cross, the trial's number at its last step (labels that would overlap
  are merged: ``#15 #16``, ``32``);
* the step-level front on that panel's latency (:func:`tuner.report.envelope.envelope`), drawn as a
  staircase over the curves: for each throughput, the lowest latency any measured step reached at it or
  above;
* the panel's SLO limit as a dashed line.

Trials told as failures are not plotted (their told values are penalties, not measurements); a note under
the plot names them. The HTML hover gives the trial, the load, every figure with its SLO verdict and the
flags; the HTML file references ``plotly.min.js`` written once beside it (works offline; an existing file of
that name is kept), so a study's plot stays small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from tuner.errors import StorageError, UsageError
from tuner.report.envelope import LEVEL_KEYS, Step, StepView, envelope, load_kind, load_level, load_text
from tuner.report.fmt import fmt_num
from tuner.report.names import unit
from tuner.report.pareto import step_view

FORMATS = (".html", ".png")
#: two labels closer than this fraction of both axis spans are merged into one
MERGE_SPAN = 0.06
#: the part of the colour scale used for loads (the palest end is hard to see on white)
COLOUR_TOP = 0.9
FRONT_NAME = "Pareto front (every step)"
#: what a load level is, by the key that gives it (:data:`tuner.report.envelope.LEVEL_KEYS`)
LOAD_AXIS = {
    "concurrency": "concurrency",
    "request_rate": "request rate (req/s)",
    "trace_scale": "trace speed-up (x)",
}


def check_target(path: str | Path) -> Path:
    """Validate a plot file name (before anything is opened). Raises :class:`UsageError`."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UsageError(f"--plot {path}: the file must end in .html or .png")
    if p.parent != Path("") and not p.parent.exists():
        raise UsageError(f"--plot {path}: folder {p.parent} does not exist")
    return p


@dataclass(frozen=True)
class Curve:
    """One configuration in one panel: its steps in load order."""

    trial: int
    is_baseline: bool
    x: list[float]
    y: list[float]
    shade: list[float]  # each point's load on the colour scale, 0..COLOUR_TOP
    cut: list[bool]  # each point: a step cut short once its verdict was settled (drawn as a cross)
    hover: list[str]


@dataclass(frozen=True)
class Panel:
    """One latency: the curves, the step-level front, the SLO limit and the merged labels."""

    metric: str
    limit: float | None
    curves: list[Curve]
    front: list[tuple[float, float]]
    load_labels: list[tuple[float, float, str]]
    trial_labels: list[tuple[float, float, str]]


@dataclass(frozen=True)
class Picture:
    """What is drawn, renderer-free."""

    title: str
    panels: list[Panel]
    scale: list[tuple[float, str]]  # colour-scale ticks: (shade, load)
    load_axis: str  # what the load level is (:data:`LOAD_AXIS`; several joined by " / ")
    note: str  # the trials not plotted, or ""


def picture(view: StepView, title: str, labels: bool = True) -> Picture:
    """The :class:`Picture` of a study's steps (pure); ``labels`` False leaves the load and trial labels
    out (merging them is most of the time for a large study; the dashboard's hover says the same)."""
    shade, ticks = _shades(view.steps)
    panels = [_panel(view, m, shade, labels) for m in view.latencies]
    kinds = {load_kind(s.load) for s in view.steps}
    failed = ", ".join(f"#{n} {why}" for n, why in view.failed)
    return Picture(
        title=title,
        panels=panels,
        scale=ticks,
        load_axis=" / ".join(LOAD_AXIS[k] for k in LEVEL_KEYS if k in kinds) or LOAD_AXIS["concurrency"],
        note=f"not plotted (no measurement): {failed}" if failed else "",
    )


def _shades(steps: Sequence[Step]) -> tuple[dict[float, float], list[tuple[float, str]]]:
    """Each load level's place on the colour scale (log scale) and up to 8 ticks for its legend."""
    levels = sorted({lv for s in steps if (lv := load_level(s.load)) is not None and lv > 0})
    if not levels:
        return {}, []
    lo, hi = math.log(levels[0]), math.log(levels[-1])
    shade = {lv: 0.0 if hi == lo else (math.log(lv) - lo) / (hi - lo) * COLOUR_TOP for lv in levels}
    every = max(1, math.ceil(len(levels) / 8))
    return shade, [(shade[lv], f"{lv:g}") for lv in levels[::every]]


def _panel(view: StepView, metric: str, shade: dict[float, float], labels: bool) -> Panel:
    by_trial: dict[int, list[Step]] = {}
    for s in view.steps:
        if s.latency.get(metric) is not None:
            by_trial.setdefault(s.trial, []).append(s)
    curves: list[Curve] = []
    loads: list[tuple[float, float, str]] = []
    trials: list[tuple[float, float, str]] = []
    for number, steps in by_trial.items():
        steps.sort(key=lambda s: (load_level(s.load) or 0.0, s.index))
        xs = [s.throughput for s in steps]
        ys = [float(s.latency[metric] or 0.0) for s in steps]
        shades = [shade.get(load_level(s.load) or 0.0, 0.0) for s in steps]
        cut = [s.pruned is not None for s in steps]
        hover = [_hover(s, view) for s in steps]
        curves.append(Curve(number, steps[0].is_baseline, xs, ys, shades, cut, hover))
        loads += [(x, y, load_text(s.load, short=True)) for x, y, s in zip(xs, ys, steps, strict=True)]
        trials.append((xs[-1], ys[-1], f"#{number}" + (" baseline" if steps[0].is_baseline else "")))
    front = [(s.throughput, float(s.latency[metric] or 0.0)) for s in envelope(view.steps, metric)]
    everything = [(x, y) for c in curves for x, y in zip(c.x, c.y, strict=True)]
    return Panel(
        metric=metric,
        limit=view.slo.get(metric),
        curves=curves,
        front=front,
        load_labels=merge_labels(loads, everything, sep=",") if labels else [],
        trial_labels=merge_labels(trials, everything, sep=" ") if labels else [],
    )


def _hover(s: Step, view: StepView) -> str:
    lines = [f"#{s.trial}" + (" (baseline)" if s.is_baseline else ""), load_text(s.load)]
    lines.append(f"output_throughput {fmt_num(s.throughput)} tok/s")
    for m in view.latencies:
        v = s.latency.get(m)
        verdict = "" if m not in s.within else (" ok" if s.within[m] else " OVER")
        lines.append(f"{m} {'-' if v is None else fmt_num(v)} {unit(m)}{verdict}")
    lines.append(("SLO met" if s.meets else "SLO broken") + (", scored step" if s.scored else ""))
    if s.pruned is not None:
        lines.append(f"cut short: {s.pruned}")
    flags = ", ".join(f"{k}={v}" for k, v in s.params.items()) or "vLLM defaults"
    lines.append(flags)
    return "<br>".join(lines)


def merge_labels(
    labels: Sequence[tuple[float, float, str]], points: Sequence[tuple[float, float]], sep: str
) -> list[tuple[float, float, str]]:
    """Labels that would overlap merged into one at the first one's place, each text once, joined by
    ``sep``: a label joins a group when it is closer than :data:`MERGE_SPAN` of both axis spans (the spans
    of ``points``) to any label already in it."""
    if not labels:
        return []
    xs, ys = [p[0] for p in points] or [0.0], [p[1] for p in points] or [0.0]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[tuple[list[tuple[float, float]], list[str]]] = []
    for x, y, text in labels:
        near = [
            g
            for g in groups
            if any(abs(gx - x) <= MERGE_SPAN * dx and abs(gy - y) <= MERGE_SPAN * dy for gx, gy in g[0])
        ]
        if not near:
            groups.append(([(x, y)], [text]))
            continue
        into = near[0]
        for other in near[1:]:  # this label bridges groups: one group
            into[0].extend(other[0])
            into[1].extend(t for t in other[1] if t not in into[1])
            groups.remove(other)
        into[0].append((x, y))
        if text not in into[1]:
            into[1].append(text)
    return [(at[0][0], at[0][1], _wrap(texts, sep)) for at, texts in groups]


def _wrap(texts: list[str], sep: str, per_line: int = 4) -> str:
    return "\n".join(sep.join(texts[i : i + per_line]) for i in range(0, len(texts), per_line))


def write_plot(study: optuna.Study, path: str | Path) -> Path:
    """Write the plot of ``study`` to ``path`` (.html or .png) and return it."""
    p = check_target(path)
    view = step_view(study)
    pic = picture(view, f"{study.study_name}: latency against output throughput, every measured step")
    try:
        if p.suffix.lower() == ".html":
            from tuner.report.plot_html import write_html

            write_html(pic, p)
        else:
            from tuner.report.plot_png import write_png

            write_png(pic, p)
    except OSError as e:
        raise StorageError(f"cannot write {p}: {e.strerror or e}") from None
    return p


def axis_label(metric: str) -> str:
    """``ttft_p99 (ms)``."""
    return f"{metric} ({unit(metric)})" if unit(metric) else metric
