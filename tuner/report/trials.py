"""One trial whole (``tuner show``) and every trial in one line (``tuner trials``). Reads the study through
:mod:`tuner.search.record`; prints nothing.

:func:`trial_rows` — one row per trial, in trial order: ``trial``, ``state`` (Optuna's), ``status``
(``ok`` or the failure class), ``is_baseline``, ``repeat_of``, ``load`` (the scored step's), ``objectives``
(tuner's metric names -> the measured value; {} for a failed trial, whatever it was told), ``slo`` (each
limit: value, limit, within) and ``meets_slo``.

:func:`trial_detail` — one trial: the row, and ``params``, ``flags`` (effective), ``argv`` and ``log_tail``
(secrets masked), ``message``, ``steps`` (every measured step: load, throughput, every SLO figure with its
verdict, pruned), ``capacity`` (bracket, why stepping stopped), ``gpu``, ``bottleneck``, ``server_metrics``,
``memory_check``, ``startup_s``, ``vllm_version``, ``hardware``, ``log_path`` and ``traffic`` (what was
sent, when stored). :func:`detail_lines` writes it for a person.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.config.redact import Redactor
from tuner.errors import UsageError
from tuner.measure.metrics import Summary
from tuner.measure.watch import settled_metric
from tuner.report.envelope import load_text
from tuner.report.fmt import fmt_num
from tuner.report.names import label, score_label, unit
from tuner.report.pareto import capacity_mode, describe_slo, metric_names, slo_checks, study_slo
from tuner.report.traffic import describe_traffic, stored_traffic
from tuner.search.record import TrialRecord, read


def _row(rec: TrialRecord, names: Sequence[str], slo: Mapping[str, float]) -> dict[str, Any]:
    result = rec.result
    metrics = dict(result.metrics or {}) if result else {}
    checks = _settled(slo_checks(metrics, slo), metrics.get("pruned")) if metrics else {}
    return {
        "trial": rec.number,
        "state": rec.state.name,
        "status": rec.failure or rec.status or ("running" if rec.state.name == "RUNNING" else None),
        "is_baseline": rec.is_baseline,
        "repeat_of": rec.repeat_of,
        "load": dict(metrics.get("load") or {}),
        "objectives": dict(zip(names, rec.scored_values, strict=False)) if rec.scored_values else {},
        "slo": checks,
        "meets_slo": False
        if metrics.get("pruned")
        else rec.feasible
        if rec.feasible is not None
        else (all(c["within"] for c in checks.values()) if checks else None),
    }


def _settled(checks: dict[str, dict[str, Any]], pruned: str | None) -> dict[str, dict[str, Any]]:
    """``checks`` of a step cut short once ``pruned`` said a limit was settled broken: that limit is not
    within, whatever the finished requests' figures say (:func:`tuner.measure.capacity.meets`)."""
    name = settled_metric(pruned) if pruned else None
    if name in checks:
        checks[name] = {**checks[name], "within": False, "settled": True}
    return checks


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of ``study`` as a row (see the module docstring)."""
    names, slo = metric_names(study), study_slo(study)
    return [_row(read(t), names, slo) for t in study.get_trials(deepcopy=False)]


def find_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of ``study``; :class:`UsageError` when there is none."""
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise UsageError(f"study {study.study_name!r} has no trial {number}")


def trial_detail(study: optuna.Study, number: int, redactor: Redactor | None = None) -> dict[str, Any]:
    """Trial ``number`` whole (see the module docstring); ``redactor`` masks secrets in argv and log."""
    t = find_trial(study, number)
    rec = read(t)
    slo = study_slo(study)
    r = redactor or Redactor.from_sources({}, {})
    result = rec.result
    detail = _row(rec, metric_names(study), slo)
    detail.update(
        params=dict(rec.run_params),
        flags=r.flags(dict(result.flags)) if result else {},
        argv=r.argv(list(rec.argv)),
        message=r.text(rec.message) if rec.message else None,
        steps=[
            _step(s, slo, i == (result.scored_step if result else None))
            for i, s in enumerate(result.steps if result else ())
        ],
        capacity=dict(result.capacity) if result else {},
        gpu=dict(result.gpu) if result else {},
        bottleneck=result.bottleneck if result else None,
        server_metrics=dict(result.server_metrics) if result else {},
        memory_check=dict(result.memory_check) if result else {},
        startup_s=result.startup_s if result else None,
        vllm_version=rec.vllm_version,
        hardware=rec.hardware,
        log_path=rec.log_path,
        log_tail=[r.text(line) for line in rec.log_tail],
        traffic=stored_traffic(t),
        predicted=prediction_of(t),
        slo_limits=dict(slo),
        capacity_mode=capacity_mode(study),
    )
    return detail


def prediction_of(t: FrozenTrial) -> dict[str, Any] | None:
    """The simulator's prediction stored with ``t`` (:mod:`tuner.search.prior`) and its error against the
    measurement (``predicted / measured - 1``), or None for a trial without one."""
    from tuner.search.prior import prediction_refit_n, stored_prediction, trial_errors, warm_start_rank

    pred = stored_prediction(t)
    if pred is None:
        return None
    return {
        "feasible": pred.feasible,
        "failure": pred.failure,
        "level": pred.level,
        "metrics": dict(pred.metrics),
        "errors": trial_errors(t),
        "warm_start_rank": warm_start_rank(t),
        "refit_n": prediction_refit_n(t),
    }


def prediction_text(p: Mapping[str, Any]) -> str:
    """``predicted by the simulator: feasible at load 56; SLO capacity 5402 (-11 %), TTFT p99 940 (-5 %)``;
    ``predicted by the simulator (constants refit on 4 trials): ...`` when made with a refit."""
    head = "predicted by the simulator" + (
        f" (warm-start pick {p['warm_start_rank']})" if p.get("warm_start_rank") else ""
    )
    if p.get("refit_n"):
        head += f" (constants refit on {p['refit_n']} trial{'' if p['refit_n'] == 1 else 's'})"
    if p.get("failure"):
        return f"{head}: {p['failure']}"
    verdict = "feasible" if p.get("feasible") else "SLO broken"
    if p.get("level") is not None:
        verdict += f" at load {fmt_num(p['level'])}"
    errors = p.get("errors") or {}
    figures = [
        f"{label(m)} {fmt_num(v)}" + (f" ({errors[m] * 100:+.0f} %)" if m in errors else "")
        for m, v in (p.get("metrics") or {}).items()
        if m in errors or m == "output_throughput"
    ]
    return f"{head}: {verdict}" + (f"; {', '.join(figures)}" if figures else "")


def _step(step: Mapping[str, Any], slo: Mapping[str, float], scored: bool) -> dict[str, Any]:
    s = Summary.from_dict(step)
    thr = s.output_throughput_tok_s
    return {
        "load": dict(s.load),
        "output_throughput": thr if math.isfinite(thr) else None,
        "completed": s.completed,
        "failed": s.failed,
        "slo": _settled(slo_checks(step, slo), s.pruned),
        "scored": scored,
        "pruned": s.pruned,
    }


def _checks_text(checks: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(
        f"{label(m)} {'-' if c['value'] is None else fmt_num(c['value'])}"
        + (
            " OVER (settled)"
            if c.get("settled")
            else ""
            if c["value"] is None
            else " ok"
            if c["within"]
            else " OVER"
        )
        for m, c in checks.items()
    )


def row_line(row: Mapping[str, Any], capacity: bool = False) -> str:
    """``#7  ok  load 40  SLO capacity 4504 tok/s, TTFT p99 527 ms  TTFT p99 527 ok, ITL p99 31.8 ok``
    (``capacity``: the throughput called :data:`tuner.report.names.CAPACITY`)."""
    head = f"#{row['trial']}" + (" (baseline)" if row["is_baseline"] else "")
    if row["repeat_of"] is not None:
        head += f" (repeat of #{row['repeat_of']})"
    status = row["status"] or row["state"].lower()
    if row["meets_slo"] is False and status == "ok":
        status = "SLO broken"
    parts = [head, status]
    if row["status"] == "ok":
        parts.append(measured_text(row, capacity))
    return "  ".join(p for p in parts if p)


def measured_text(row: Mapping[str, Any], capacity: bool = False) -> str:
    """``load 40; SLO capacity 4504 tok/s, TTFT p99 527 ms; TTFT p99 527 ok, ITL p99 31.8 ok`` (parts the
    row has no figures for left out)."""
    parts = []
    if row["load"]:
        parts.append(f"load {load_text(row['load'], short=True)}")
    if row["objectives"]:
        parts.append(
            ", ".join(
                f"{score_label(m, capacity)} {fmt_num(v)} {unit(m)}".rstrip()
                for m, v in row["objectives"].items()
            )
        )
    if row["slo"]:
        parts.append(_checks_text(row["slo"]))
    return "; ".join(parts)


def _value(v: Any) -> str:
    """A flag value for a person: floats without binary noise (0.30000000000000004 -> 0.3)."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _bracket_text(b: Any) -> str:
    """``bracket 56-60 (7.1 %, within the 10 % resolution)``, or why there is none."""
    if not isinstance(b, Mapping):
        return "no bracket"
    lo, hi = b.get("passing"), b.get("failing")
    span = (
        f"below {fmt_num(hi)}"
        if lo is None and hi is not None
        else f"above {fmt_num(lo)}"
        if hi is None and lo is not None
        else f"{fmt_num(lo)}-{fmt_num(hi)}"
        if lo is not None and hi is not None
        else "none"
    )
    res = b.get("resolution")
    width = b.get("width")
    how = f"{width * 100:.1f} %" if isinstance(width, (int, float)) else "open"
    if res is not None:
        how += f", {'within' if b.get('within') else 'not within'} the {res * 100:g} % resolution"
    reason = f": {b['reason']}" if b.get("reason") else ""
    return f"bracket {span} ({how}){reason}"


def detail_lines(d: Mapping[str, Any]) -> list[str]:
    """:func:`trial_detail` for a person, one fact a line."""
    lines = [row_line(d, d["capacity_mode"])]
    if d["message"]:
        lines.append(f"message: {d['message']}")
    if d["params"]:
        lines.append("params: " + ", ".join(f"{k}={_value(v)}" for k, v in d["params"].items()))
    if d["flags"]:
        lines.append("flags: " + ", ".join(f"{k}={_value(v)}" for k, v in d["flags"].items()))
    if d["argv"]:
        lines.append("argv: " + " ".join(d["argv"]))
    if d["slo_limits"]:
        lines.append(f"SLO: {describe_slo(d['slo_limits'])}")
    sent = describe_traffic(d["traffic"])
    if sent:
        lines.append(sent)
    if d.get("predicted"):
        lines.append(prediction_text(d["predicted"]))
    for i, s in enumerate(d["steps"]):
        mark = " (scored)" if s["scored"] else ""
        cut = f" (cut short: {s['pruned']})" if s["pruned"] else ""
        thr = "-" if s["output_throughput"] is None else fmt_num(s["output_throughput"])
        lines.append(
            f"  step {i}: {load_text(s['load'])}, {thr} tok/s, {s['completed']} done / {s['failed']} failed; "
            f"{_checks_text(s['slo'])}{mark}{cut}"
        )
    cap = d["capacity"]
    if cap.get("bracket") or cap.get("stop"):
        bracket, stop = _bracket_text(cap.get("bracket")), cap.get("stop")
        lines.append(f"capacity: {bracket}" + (f"; stopped: {stop}" if stop and stop not in bracket else ""))
    extras = [("startup", d["startup_s"] and f"{d['startup_s']:.1f} s"), ("bottleneck", d["bottleneck"])]
    extras += [("vLLM", d["vllm_version"]), ("hardware", d["hardware"])]
    shown = [f"{k} {v}" for k, v in extras if v]
    if shown:
        lines.append("; ".join(shown))
    gpu = d["gpu"]
    if gpu.get("available"):
        lines.append(
            "GPU: "
            + ", ".join(
                f"{k} mean {_f(v.get('mean'))} max {_f(v.get('max'))}"
                for k, v in gpu.items()
                if isinstance(v, Mapping)
            )
        )
    view = d["server_metrics"].get("view")
    if isinstance(view, Mapping):
        lines.append("server: " + ", ".join(f"{k} {_f(v)}" for k, v in view.items()))
    if d["memory_check"].get("reason"):
        lines.append(f"memory check: {d['memory_check']['reason']}")
    if d["log_path"]:
        lines.append(f"log: {d['log_path']}")
    if d["log_tail"]:
        lines += ["log tail:", *(f"  {line}" for line in d["log_tail"])]
    return lines


def _f(v: Any) -> str:
    return fmt_num(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
