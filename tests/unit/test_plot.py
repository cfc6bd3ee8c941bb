"""The plot: what is drawn (one panel per latency, every measured configuration's curve, the envelope, every
SLO limit, no failed trial), in the PNG's figure and in the HTML's data, and the HTML stays small."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from tuner.report.pareto import step_view
from tuner.report.plot import merge_labels, picture, write_plot
from tuner.report.plot_png import figure

LIMITS = {"ttft_p99": 1000.0, "itl_p99": 50.0}


def step(conc: int, thr: float, ttft: float, itl: float) -> dict[str, Any]:
    return {
        "output_throughput_tok_s": thr,
        "ttft_ms": {"p99": ttft},
        "itl_ms": {"p99": itl},
        "completed": 100,
        "load": {"concurrency": conc, "requests": 100},
    }


def add(study: optuna.Study, steps: list[dict[str, Any]], status: str = "ok", baseline: bool = False) -> None:
    params = {} if baseline else {"max-num-seqs": 128 + len(study.trials), "quantization": "fp8"}
    t = optuna.trial.create_trial(
        values=[steps[0]["output_throughput_tok_s"], steps[0]["ttft_ms"]["p99"]] if steps else [0.0, 11000.0],
        user_attrs={
            "status": status,
            "failure": None if status == "ok" else status,
            "is_baseline": baseline,
            "run_params": params,
            "result": {"steps": steps, "scored_step": 0} if steps else {"metrics": None},
        },
    )
    t.set_constraint("failed", 0.0 if status == "ok" else 1.0)
    study.add_trial(t)


@pytest.fixture
def study() -> optuna.Study:
    s = optuna.create_study(study_name="plot", directions=["maximize", "minimize"])
    s.set_user_attr("metric_names", ["output_throughput", "ttft_p99"])
    s.set_user_attr("spec", {"slo": {"ttft_p99_ms": 1000.0, "itl_p99_ms": 50.0}})
    add(s, [step(32, 3400, 816, 14), step(64, 4583, 1626, 188)], baseline=True)  # 0
    add(s, [step(32, 4500, 520, 32), step(64, 6450, 1066, 35), step(128, 7488, 2252, 44)])  # 1
    add(s, [], status="oom")  # 2: told 11000 ms, must not appear
    cut = {**step(128, 7100, 2200, 250), "pruned": "itl_p99 settled over its limit"}
    add(s, [step(32, 4200, 580, 14), step(64, 6000, 1150, 17), cut])  # 3: its last step cut short
    return s


def test_the_picture(study: optuna.Study) -> None:
    pic = picture(step_view(study), "t")
    assert [p.metric for p in pic.panels] == ["ttft_p99", "itl_p99"]
    assert {p.metric: p.limit for p in pic.panels} == LIMITS
    for p in pic.panels:
        assert sorted(c.trial for c in p.curves) == [0, 1, 3]
        assert all(y < 11000 for c in p.curves for y in c.y)
        assert p.front and all(
            a[0] < b[0] and a[1] < b[1] for a, b in zip(p.front, p.front[1:], strict=False)
        )
    assert pic.note == "not plotted (no measurement): #2 oom"
    assert [text for _, text in pic.scale] == ["32", "64", "128"]
    ttft = pic.panels[0]
    assert ttft.front == [(4500, 520), (6450, 1066), (7488, 2252)]  # not the step cut short
    assert next(c for c in ttft.curves if c.trial == 3).cut == [False, False, True]
    base = next(c for c in ttft.curves if c.is_baseline)
    assert base.shade[0] == 0.0 and base.shade[1] > 0.0  # coloured by load
    assert "concurrency 64" in base.hover[1] and "vLLM defaults" in base.hover[1] and "OVER" in base.hover[1]


def test_labels_can_be_left_out(study: optuna.Study) -> None:
    view = step_view(study)
    drawn, bare = picture(view, "t"), picture(view, "t", labels=False)
    assert all(p.load_labels and p.trial_labels for p in drawn.panels)
    assert all(not p.load_labels and not p.trial_labels for p in bare.panels)
    assert [p.curves for p in bare.panels] == [p.curves for p in drawn.panels]
    assert [p.front for p in bare.panels] == [p.front for p in drawn.panels]


@pytest.mark.parametrize(
    ("loads", "axis"),
    [
        ([{"concurrency": 8}, {"concurrency": 16}], "concurrency"),
        ([{"request_rate": 2.0}, {"request_rate": 4.0, "arrivals": "gamma"}], "request rate (req/s)"),
        (
            [{"arrivals": "trace", "trace_scale": 1.0}, {"arrivals": "trace", "trace_scale": 2.0}],
            "trace speed-up (x)",
        ),
        ([{"concurrency": 8}, {"request_rate": 4.0}], "concurrency / request rate (req/s)"),
    ],
)
def test_the_load_axis_says_what_the_level_is(loads: list[dict[str, Any]], axis: str) -> None:
    s = optuna.create_study(study_name="axis", directions=["maximize", "minimize"])
    s.set_user_attr("metric_names", ["output_throughput", "ttft_p99"])
    steps = [{**step(8, 100.0 * (i + 1), 100.0, 10.0), "load": load} for i, load in enumerate(loads)]
    add(s, steps)
    pic = picture(step_view(s), "t")
    assert pic.load_axis == axis
    if "trace_scale" in loads[0]:  # labelled by the trace's speed-up
        assert any("x2" in text for p in pic.panels for _, _, text in p.load_labels)


def test_the_png_figure(study: optuna.Study, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(picture(step_view(study), "t"))
    try:
        axes = fig.axes[:2]  # the third is the colour bar
        for axis, (metric, limit) in zip(axes, LIMITS.items(), strict=True):
            assert axis.get_ylabel() == f"{metric} (ms)"
            lines = [ln for ln in axis.get_lines() if len(ln.get_xdata())]
            slo = [ln for ln in lines if list(ln.get_ydata()) == [limit, limit]]
            assert len(slo) == 1 and slo[0].get_linestyle() == "--"
            assert len(lines) == 3 + 1 + 1  # three curves, the envelope, the SLO line
            texts = " ".join(t.get_text() for t in axis.texts)
            assert "#0 baseline" in texts and "#1" in texts and "#3" in texts and "#2" not in texts
            assert "128" in texts
            assert max(y for ln in lines for y in ln.get_ydata()) < 11000
        assert "#2 oom" in " ".join(t.get_text() for t in fig.texts)
    finally:
        plt.close(fig)
    out = write_plot(study, tmp_path / "front.png")
    assert out.read_bytes().startswith(b"\x89PNG")


def _plotly_figure(html: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The data and layout passed to ``Plotly.newPlot`` in a page written by plotly."""
    rest = html[html.index("Plotly.newPlot(") :]
    rest = rest[rest.index("[") :]
    dec = json.JSONDecoder()
    data, end = dec.raw_decode(rest)
    rest = rest[end:]
    layout, _ = dec.raw_decode(rest[rest.index("{") :])
    return data, layout


def test_the_html(study: optuna.Study, tmp_path: Path) -> None:
    out = write_plot(study, tmp_path / "front.html")
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000  # written once beside it, not inside
    assert out.stat().st_size < 50_000
    html = out.read_text()
    assert '<script charset="utf-8" src="plotly.min.js">' in html
    data, layout = _plotly_figure(html)
    curves = [t for t in data if t.get("mode") == "lines+markers" and t["name"].startswith("#")]
    assert sorted(t["name"] for t in curves) == sorted(["#0 baseline", "#1", "#3"] * 2)
    assert sum(t.get("name") == "Pareto front (every step)" for t in data) == 2
    assert all(y < 11000 for t in data for y in t.get("y", []) if isinstance(y, int | float))
    assert "#2" not in json.dumps([t.get("text") for t in data])
    hover = " ".join(h for t in curves for h in t["text"])
    assert (
        "cut short: itl_p99 settled" in hover
        and "max-num-seqs=129" in hover
        and "concurrency 128" in hover
        and "itl_p99 250 ms OVER" in hover
    )
    slo = sorted(s["y0"] for s in layout["shapes"])
    assert slo == [50.0, 1000.0]
    assert "#2 oom" in json.dumps(layout["annotations"])
    (tmp_path / "plotly.min.js").write_text("kept")
    write_plot(study, tmp_path / "again.html")
    assert (tmp_path / "plotly.min.js").read_text() == "kept"  # one copy per folder, left as it is


def test_overlapping_labels_merge() -> None:
    pts = [(0.0, 0.0), (100.0, 100.0)]
    labels = [
        (50.0, 50.0, "#1"),
        (51.0, 51.0, "#2"),
        (54.0, 54.0, "#3"),
        (90.0, 10.0, "#4"),
        (50.5, 50.5, "#1"),
    ]
    assert merge_labels(labels, pts, " ") == [(50.0, 50.0, "#1 #2 #3"), (90.0, 10.0, "#4")]
    many = [(1.0, 1.0, f"#{i}") for i in range(6)]
    assert merge_labels(many, pts, " ") == [(1.0, 1.0, "#0 #1 #2 #3\n#4 #5")]
