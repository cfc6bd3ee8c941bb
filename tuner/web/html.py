"""The pages as HTML, from the page models of :mod:`tuner.web.views`. Pure: strings in, a string out.

Every text is escaped (:func:`html.escape`); the plot's figure travels as JSON in a
``<script type="application/json">`` block (not executed), so no page runs inline script. A page that
follows a study carries ``data-live`` (the URL of its revision), ``data-revision`` and ``data-interval`` on
``<body>``; ``/static/dashboard.js`` polls that URL and, when the revision changes, fetches the page again
and swaps its ``<main>``. Elements ``.age[data-epoch]`` show how long ago that moment was, kept current by
the script (the server-rendered text is right at render time).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from tuner.web.views import ago


def study_url(name: str) -> str:
    """``/study/<name>`` (the name percent-encoded)."""
    return f"/study/{urllib.parse.quote(name, safe='')}"


def page(
    title: str,
    main: str,
    *,
    storage: str,
    live: str = "",
    revision: str = "",
    interval_ms: int = 0,
    plot: bool = False,
) -> str:
    """A whole page around ``main`` (already HTML)."""
    body_attrs = (
        f' data-live="{escape(live)}" data-revision="{escape(revision)}" data-interval="{interval_ms}"'
        if live
        else ""
    )
    scripts = ('<script src="/static/plotly.min.js"></script>' if plot else "") + (
        '<script src="/static/dashboard.js"></script>'
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/static/dashboard.css"></head>'
        f'<body{body_attrs}><header><a href="/">tuner dashboard</a>'
        f'<span class="storage">{escape(storage)}</span>'
        f'<span class="fresh">read <span class="age" data-epoch="{time.time():.3f}">just now</span></span>'
        f"</header><main>{main}</main>{scripts}</body></html>"
    )


def _age(epoch: float | None, now: float, trial: int | None = None) -> str:
    if epoch is None:
        return "-"
    which = "" if trial is None else f' data-trial="{trial}"'
    return f'<span class="age"{which} data-epoch="{epoch:.3f}">{escape(ago(now - epoch))}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], attrs: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(pairs: Sequence[tuple[str, str]], empty: str = "not recorded") -> str:
    if not pairs:
        return f'<p class="muted">{escape(empty)}</p>'
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in pairs)
    return f'<table class="pairs">{rows}</table>'


def index_page(rows: Sequence[Mapping[str, Any]], now: float) -> str:
    """The all-studies page's ``<main>`` (rows: :func:`tuner.web.views.overview`)."""
    if not rows:
        return '<h1>Studies</h1><p class="muted">no studies in this storage yet</p>'
    cells = [
        [
            f'<a href="{study_url(r["name"])}">{escape(r["name"])}</a>',
            escape(r["model"]),
            escape(r["hardware"]),
            f"{r['finished']}/{r['budget'] if r['budget'] is not None else '-'}",
            str(r["failed"]),
            f'<span class="running">{r["running"]} running</span>' if r["running"] else "-",
            escape(r["best"]),
            escape(r["vs_baseline"] or "-"),
            _age(r["last_activity"], now),
        ]
        for r in rows
    ]
    headers = ("study", "model", "GPU", "trials", "failed", "now", "best", "vs baseline", "last activity")
    table = _table(headers, cells, ' id="studies"')
    return "<h1>Studies</h1>" + table


def _copy(label: str, ident: str, text: str) -> str:
    return (
        f'<div class="copyable"><div class="bar">{escape(label)}'
        f'<button class="copy" data-copy="{ident}">copy</button></div>'
        f'<pre id="{ident}">{escape(text)}</pre></div>'
    )


def _export(export: Mapping[str, str] | None, what: str) -> str:
    if not export:
        return f'<p class="muted">{escape(what)}: nothing stored to export</p>'
    return _copy(f"{what}: vllm serve", "export-cmd", export["cmd"]) + _copy(
        f"{what}: --config YAML", "export-yaml", export["yaml"]
    )


def study_main(v: Mapping[str, Any], now: float) -> str:
    """The study page's ``<main>`` (v: :func:`tuner.web.views.study_view`)."""
    budget = v["budget"]
    bar = f'<progress max="{budget}" value="{v["finished"]}"></progress>' if budget else ""
    summary = _pairs(
        [
            ("model", v["model"]),
            ("GPU", v["hardware"]),
            (
                "trials",
                f"{v['finished']}/{budget if budget is not None else '-'} finished, {v['failed']} failed",
            ),
            ("time left", v["time_left"]),
            ("best so far", v["best"]),
            ("against the baseline", v["vs_baseline"] or "-"),
        ]
    )
    running = "".join(
        f'<li><a href="{study_url(v["name"])}/trial/{t["number"]}">trial {t["number"]}</a>: '
        f"{escape(t['phase'])}; last heartbeat {_age(t['heartbeat'], now, t['number'])}"
        + ("" if t["alive"] else ' <strong class="dead">worker gone (orphan)</strong>')
        + f' <span class="muted">{escape(t["params"])}</span></li>'
        for t in v["running_trials"]
    )
    running_html = (
        f'<ul id="running">{running}</ul>'
        if running
        else '<p id="running" class="muted">no trial running</p>'
    )
    best = v["best_trial"]
    fig = json.dumps(v["figure"], separators=(",", ":")).replace("</", "<\\/")
    plot = (
        f'<div id="plot" class="plot" data-figure="plot-data" data-front-points="{v["front_points"]}"></div>'
        f'<script type="application/json" id="plot-data">{fig}</script>'
        f'<p class="muted">step-level front: <span id="front-points">{v["front_points"]}</span> points; '
        f"trials on the Pareto front: {escape(', '.join(f'#{n}' for n in v['front_trials']) or '-')}</p>"
    )
    return (
        f"<h1>{escape(v['name'])}</h1>{bar}{summary}<h2>Running now</h2>{running_html}"
        f"<h2>Latency against throughput</h2>{plot}"
        f"<h2>Best configuration{f' (trial {best})' if best is not None else ''}</h2>"
        f"{_export(v['export'], 'best') if best is not None else '<p class=muted>no feasible trial yet</p>'}"
        f"<h2>Trials</h2>{_trials_table(v)}"
    )


def _trials_table(v: Mapping[str, Any]) -> str:
    base = study_url(v["name"])
    rows = []
    for t in v["trials"]:
        cls = " ".join(
            c
            for c, on in (("failed", t["failed"]), ("front", t["on_front"]), ("baseline", t["baseline"]))
            if on
        )
        tags = ("baseline " if t["baseline"] else "") + (
            f"repeat of #{t['repeat_of']} " if t["repeat_of"] is not None else ""
        )
        rows.append(
            f'<tr class="{cls}"><td><a href="{base}/trial/{t["number"]}">#{t["number"]}</a></td>'
            f"<td>{escape(t['state'])}</td><td>{escape(t['status'])}</td><td>{escape(t['values'])}</td>"
            f"<td>{'yes' if t['on_front'] else ''}</td><td>{escape(tags + t['params'])}</td>"
            f"<td>{escape(t['bottleneck'])}</td><td>{escape(t['seconds'])}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("trial", "state", "status", "objectives", "front", "flags", "bottleneck", "took")
    )
    return (
        f'<table id="trials" data-count="{len(v["trials"])}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def trial_main(v: Mapping[str, Any], now: float) -> str:
    """The trial page's ``<main>`` (v: :func:`tuner.web.views.trial_view`)."""
    row = v["row"]
    steps = (
        _table(
            ("load", "output throughput", "latency (SLO verdict)", "SLO met", "scored", "cut short"),
            [
                [
                    escape(s["load"]),
                    escape(s["throughput"]),
                    escape(s["latency"]),
                    "yes" if s["meets"] else "no",
                    "yes" if s["scored"] else "",
                    escape(s["pruned"]),
                ]
                for s in v["steps"]
            ],
            ' id="steps"',
        )
        if v["steps"]
        else '<p class="muted">no measured step</p>'
    )
    head = _pairs(
        [
            ("state", row["state"]),
            ("status", row["status"]),
            ("objectives", row["values"]),
            ("on the Pareto front", "yes" if row["on_front"] else "no"),
            ("took", row["seconds"]),
            ("vLLM", v["vllm_version"]),
            ("hardware", v["hardware"]),
            ("bottleneck", v["bottleneck"]),
            ("message", v["message"] or "-"),
        ]
    )
    beat = (
        f"<p>last heartbeat {_age(v['heartbeat'], now, v['row']['number'])}</p>"
        if v["heartbeat"] is not None
        else ""
    )
    log = "\n".join(v["log_tail"])
    simulated = f"<h2>Simulator</h2><p>{escape(v['prediction'])}</p>" if v.get("prediction") else ""
    return (
        f'<p><a href="{study_url(v["study"])}">&larr; {escape(v["study"])}</a></p>'
        f"<h1>trial {row['number']}{' (baseline)' if row['baseline'] else ''}</h1>{beat}{head}"
        f"<h2>Flags</h2>{_pairs(v['flags'], 'vLLM defaults')}"
        f"<h2>Server command</h2><pre>{escape(v['argv'] or '-')}</pre>"
        f"<h2>Export</h2>{_export(v['export'], 'this configuration')}"
        f"<h2>Load steps</h2>{steps}<h3>Capacity search</h3>{_pairs(v['capacity'])}"
        f"<h2>GPU telemetry</h2>{_pairs(v['telemetry'])}"
        f"<h2>Server-side view</h2>{_pairs(v['server'])}"
        f"<h2>Memory check (predicted before launch)</h2>{_pairs(v['memory'])}{simulated}"
        f'<h2>Log tail</h2><p class="muted">{escape(v["log_path"])}</p><pre class="log">{escape(log or "-")}</pre>'
    )


def error_main(status: int, message: str) -> str:
    """An error page's ``<main>``: the status and one line."""
    return f'<h1>{status}</h1><p class="error">{escape(message)}</p><p><a href="/">all studies</a></p>'


def failure_note(message: str) -> str:
    """A line above the page: the last read of the storage failed, the page shows what was read before."""
    return f'<p class="error">the storage could not be read ({escape(message)}); showing what was read before</p>'
