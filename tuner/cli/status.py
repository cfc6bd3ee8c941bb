"""``tuner status [STUDY.yaml] [--storage URL] [--json]``: studies, trials done/failed/running, best so far,
time left (only while a live worker runs it), each worker running a trial now (host, pid, GPUs, trial,
heartbeat age), what was sent, server starts and the confirmed configurations (mean ± half the range of their runs). The figures are :func:`tuner.report.status.study_status`'s; this prints them."""

from __future__ import annotations

import argparse
import time
from typing import Any

from tuner.cli.output import Console
from tuner.config.paths import default_storage
from tuner.config.spec import load_spec
from tuner.errors import EXIT_BAD_INPUT, UsageError


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study", nargs="?")
    c.add_argument("--storage")
    c.add_argument("--json", action="store_true")


def handle(args: argparse.Namespace, console: Console) -> int:
    import optuna

    from tuner.report.names import unit
    from tuner.report.status import describe_confirmed, describe_starts, human_duration, study_status
    from tuner.search.storage import open_storage, storage_errors
    from tuner.search.workers import running_workers

    console.json_mode = args.json
    spec = load_spec(args.study) if args.study else None
    url = args.storage or (default_storage(spec) if spec else None)
    if url is None:
        console.abort("status: give a study file or --storage URL", EXIT_BAD_INPUT)
    st = open_storage(url, create=False)
    with storage_errors(url):
        names = [spec.name] if spec else sorted(s.study_name for s in optuna.get_all_study_summaries(st))
        studies = [optuna.load_study(study_name=n, storage=st) for n in names if _exists(st, n)]
        rows = [study_status(s) for s in studies]
        now = time.time()
        for row, study in zip(rows, studies, strict=True):
            row["workers"] = running_workers(study.get_trials(deepcopy=False), now=now)
    if spec and not rows:
        raise UsageError(f"no study named {spec.name!r} in {url}")
    if args.json:
        console.json(rows)
        return 0
    if not rows:
        console.info(f"no studies in {url}")
    for r in rows:
        left = "" if r["time_left_s"] is None else f", about {human_duration(r['time_left_s'])} left"
        console.print(
            f"{r['study']}: {r['finished']}/{r['budget']} finished ({r['ok']} measured, {r['failed']} failed), "
            f"{r['running']} running, {r['queued']} queued, {r['interrupted']} interrupted{left}; "
            f"best so far: {r['best'] or '-'}"
        )
        if r["sent"]:
            console.print(f"  {r['sent']}")
        for w in r["workers"]:
            console.print(f"  {describe_worker(w)}")
        starts = describe_starts(r["starts"])
        if starts:
            console.print(f"  server starts: {starts}")
        if r["confirmed"]:
            metric = r["objective"]
            shown = "; ".join(describe_confirmed(c, unit(metric)) for c in r["confirmed"])
            console.print(f"  confirmed ({metric}, {r['repeats']} repeats): {shown}")
        if r.get("sim_error"):
            console.print(f"  simulator's prediction error: {r['sim_error']}")
        if r.get("sim_refit"):
            console.print(f"  simulator refit: {r['sim_refit']}")
    return 0


def describe_worker(w: dict[str, Any]) -> str:
    """One running trial's worker in words: host, pid, GPUs, trial, heartbeat age."""
    gpus = f" on GPU {','.join(w['gpus'])}" if w["gpus"] else ""
    age = w["heartbeat_age_s"]
    beat = "no heartbeat" if age is None else f"heartbeat {age:.0f} s ago"
    return f"worker {w['host']} pid {w['pid'] or '?'}{gpus}: trial {w['trial']}, {beat}"


def _exists(storage: Any, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True
