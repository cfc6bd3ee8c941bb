"""Page models: what each page shows, from a study's :class:`~tuner.web.cache.StudyData`. Pure.

Every string that comes from the storage and may hold a secret (argv, flags, messages, log lines, exported
commands, the study's model and storage) goes through a :class:`tuner.config.redact.Redactor` built by
:func:`redactor` from the stored study file's ``server.env`` and ``server.args`` and the dashboard's own
environment: tuner masks secrets before it stores them, and the dashboard masks again whatever an older
tuner or another program left. Figures are formatted by :mod:`tuner.report` (``fmt_num``, ``unit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.trial import TrialState

from tuner.config.argv import shell_command
from tuner.config.redact import Redactor
from tuner.errors import TunerError
from tuner.report.envelope import load_text
from tuner.report.fmt import fmt_num
from tuner.report.names import unit
from tuner.report.pareto import format_values
from tuner.report.status import human_duration
from tuner.report.trials import prediction_of, prediction_text
from tuner.search.record import StoredResult, TrialRecord
from tuner.web.cache import StudyData
from tuner.web.plot import figure, front_points

#: nested mappings (telemetry, server-side view) are shown to this depth
FLAT_DEPTH = 3


def redactor(d: StudyData, environ: Mapping[str, str]) -> Redactor:
    """The redactor of ``d``'s pages (see the module docstring)."""
    server = _mapping((d.study.spec or {}).get("server"))
    env, args = _mapping(server.get("env")), _mapping(server.get("args"))
    return Redactor.from_sources(environ, {str(k): str(v) for k, v in env.items()}, flags=args)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def ago(seconds: float | None) -> str:
    """``42s ago``, ``3m07s ago``; ``-`` for None."""
    return "-" if seconds is None else f"{human_duration(max(seconds, 0.0))} ago"


def overview(d: StudyData, r: Redactor) -> dict[str, Any]:
    """A row of the all-studies page: ``name``, ``model``, ``hardware``, ``finished``, ``budget``,
    ``failed``, ``running`` (trials whose worker lives), ``best``, ``vs_baseline`` (text, or ""),
    ``last_activity`` (epoch seconds, or None)."""
    spec = d.study.spec or {}
    hardware = next((x.hardware for x in reversed(d.records) if x.hardware), None)
    times = [t for x in d.records for t in (x.started_at, x.ended_at) if t is not None]
    times += list(d.heartbeats.values())
    times += [t.datetime_start.timestamp() for t in d.trials if t.datetime_start is not None]
    return {
        "name": d.name,
        "model": r.text(str(spec.get("model") or "-")),
        "hardware": hardware or "-",
        "finished": d.status.get("finished", 0),
        "budget": d.status.get("budget"),
        "failed": d.status.get("failed", 0),
        "running": len(d.alive),
        "best": d.status.get("best") or "-",
        "vs_baseline": vs_baseline_text(d),
        "last_activity": max(times) if times else None,
    }


def vs_baseline_text(d: StudyData) -> str:
    """``+63.2 % output_throughput vs the baseline`` for the best trial of the front, or ""."""
    if not d.front or not d.metric_names:
        return ""
    metric = d.metric_names[0]
    change = (d.front[0].get("vs_baseline") or {}).get(metric)
    if not isinstance(change, int | float):
        return ""
    return f"{change:+.1f} % {metric} vs the baseline"


def study_view(d: StudyData, r: Redactor) -> dict[str, Any]:
    """The study page: :func:`overview`'s keys and ``time_left``, ``running_trials`` (number, phase,
    heartbeat epoch, alive, params), ``trials`` (:func:`trial_row` of each, by number), ``figure``
    (:func:`tuner.web.plot.figure`), ``front_points``, ``front_trials``, ``best_trial`` and ``export``
    (``cmd``/``yaml`` of the best trial, or None), ``revision``."""
    out = overview(d, r)
    left = d.status.get("time_left_s")
    on_front = {int(row["trial"]) for row in d.front}
    best = int(d.front[0]["trial"]) if d.front else None
    out.update(
        time_left=human_duration(left) if isinstance(left, int | float) else "-",
        running_trials=[_running(d, rec) for rec in d.records if rec.state == TrialState.RUNNING],
        trials=[trial_row(rec, d.metric_names, rec.number in on_front) for rec in d.records],
        figure=figure(d.picture),
        front_points=front_points(d.picture),
        front_trials=sorted(on_front),
        best_trial=best,
        export=export(d, best, r) if best is not None else None,
        revision=d.revision,
    )
    return out


def _running(d: StudyData, rec: TrialRecord) -> dict[str, Any]:
    # tuner stores no phase while a trial runs; its status is stored first when it saves its result
    return {
        "number": rec.number,
        "phase": "saving its result" if rec.status else "running (starting, warming up or measuring)",
        "heartbeat": d.heartbeats.get(rec.number),
        "alive": rec.number in d.alive,
        "params": _params_text(rec.run_params, rec.is_baseline),
    }


def trial_row(rec: TrialRecord, names: tuple[str, ...], on_front: bool) -> dict[str, Any]:
    """One row of the trial table: ``number``, ``state``, ``status``, ``baseline``, ``repeat_of``,
    ``params``, ``values`` (text), ``seconds`` (text), ``on_front``, ``bottleneck``."""
    status = rec.failure or rec.status or ("interrupted" if rec.interrupted else "")
    return {
        "number": rec.number,
        "state": rec.state.name.lower(),
        "status": status or "-",
        "failed": rec.failed,
        "baseline": rec.is_baseline,
        "repeat_of": rec.repeat_of,
        "params": _params_text(rec.run_params, rec.is_baseline),
        "values": format_values(names, rec.scored_values),
        "seconds": human_duration(rec.seconds) if rec.seconds is not None else "-",
        "on_front": on_front,
        "bottleneck": (rec.result.bottleneck if rec.result else None) or "",
    }


def _params_text(params: Mapping[str, Any], baseline: bool) -> str:
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    return text or ("vLLM defaults" if baseline else "-")


def export(d: StudyData, number: int, r: Redactor) -> dict[str, str] | None:
    """``{"cmd": "vllm serve ...", "yaml": "model: ..."}`` for trial ``number``, or None when it stored
    nothing to export (:mod:`tuner.report.export`)."""
    from tuner.report.export import serve_args, to_command, to_yaml

    found = d.trial(number)
    if found is None:
        return None
    model = (d.study.spec or {}).get("model")
    try:
        name, flags = serve_args(found[0], default_model=model if isinstance(model, str) else None)
    except TunerError:
        return None
    flags = r.flags(flags)
    return {"cmd": r.text(to_command(r.text(name), flags)), "yaml": r.text(to_yaml(r.text(name), flags))}


def trial_view(d: StudyData, number: int, r: Redactor) -> dict[str, Any] | None:
    """The trial page, or None when the study has no trial ``number``: ``row`` (:func:`trial_row`),
    ``message``, ``flags``, ``argv``, ``steps``, ``capacity``, ``telemetry``, ``server``, ``bottleneck``,
    ``memory``, ``log_tail``, ``export``, ``vllm_version``, ``hardware``, ``heartbeat``, ``study``,
    ``prediction`` (the simulator's, against the measurement; "" without one)."""
    found = d.trial(number)
    if found is None:
        return None
    rec = found[1]
    res = rec.result or StoredResult()
    on_front = any(int(row["trial"]) == number for row in d.front)
    return {
        "study": d.name,
        "row": trial_row(rec, d.metric_names, on_front),
        "message": r.text(rec.message or ""),
        "flags": [(k, str(v)) for k, v in r.flags(dict(res.flags or rec.run_params)).items()],
        "argv": shell_command(r.argv(list(rec.argv))) if rec.argv else "",
        "steps": step_rows(d, number),
        "capacity": flatten(r.obj(dict(res.capacity))),
        "telemetry": flatten(r.obj(dict(res.gpu))),
        "server": flatten(r.obj(dict(res.server_metrics))),
        "bottleneck": res.bottleneck or "-",
        "memory": flatten(r.obj(dict(res.memory_check))),
        "log_tail": [r.text(line) for line in rec.log_tail],
        "log_path": r.text(rec.log_path or ""),
        "export": export(d, number, r),
        "vllm_version": rec.vllm_version or "-",
        "hardware": rec.hardware or "-",
        "heartbeat": d.heartbeats.get(number),
        "revision": d.revision,
        "prediction": prediction_text(pred) if (pred := prediction_of(found[0])) else "",
    }


def step_rows(d: StudyData, number: int) -> list[dict[str, Any]]:
    """Each measured step of trial ``number``: ``load``, ``throughput``, ``latency`` (text with each SLO
    verdict), ``meets``, ``scored``, ``pruned``."""
    rows = []
    for s in d.view.steps:
        if s.trial != number:
            continue
        parts = []
        for m in d.view.latencies:
            v = s.latency.get(m)
            verdict = "" if m not in s.within else (" ok" if s.within[m] else " OVER")
            parts.append(f"{m} {'-' if v is None else fmt_num(v)} {unit(m)}{verdict}")
        rows.append(
            {
                "load": load_text(s.load),
                "throughput": f"{fmt_num(s.throughput)} tok/s",
                "latency": "; ".join(parts),
                "meets": s.meets,
                "scored": s.scored,
                "pruned": s.pruned or "",
            }
        )
    return rows


def flatten(value: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """A nested mapping as ``(dotted key, text)`` pairs, numbers by ``fmt_num``; deeper than
    :data:`FLAT_DEPTH` and lists are shown as their text."""
    if isinstance(value, Mapping) and depth < FLAT_DEPTH:
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        return out
    if isinstance(value, bool) or value is None:
        text = str(value).lower() if value is not None else "-"
    elif isinstance(value, int | float):
        text = fmt_num(value) if value == value else "-"
    else:
        text = str(value)
    return [(prefix, text)]
