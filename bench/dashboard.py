"""The dashboard's speed: a generated 1,000-trial study, its study page rendered and timed.

    python bench/dashboard.py                 # make bench-dashboard: generate (once), time, print page weights
    python bench/dashboard.py --trials 200    # a smaller study
    python bench/dashboard.py --db PATH       # keep the generated database at PATH (default: build/)

The database is written by tuner's own writers through an Optuna study, as ``tuner run`` writes it, with no
server: :func:`tuner.search.study.open_study` on ``studies/h200-llama8b-refined.yaml`` (the H200 study's space,
workload and SLO), then for each trial ``ask`` and :func:`tuner.search.tell.tell` of a
:class:`~tuner.measure.result.TrialResult` whose steps are the stored steps of that study's real trials
(``results/h200/h200-llama8b-refined.db``) scaled by a factor drawn per trial; one trial in ten fails
(``oom`` / ``startup_timeout``), and the last is left RUNNING with a heartbeat. It is generated on a tmpfs
when there is one and copied next, so that 1,000 trials take seconds instead of a minute of fsyncs.

Timed: a fresh dashboard application (cold: the first refresh reads every trial) and then the same page again
within the refresh interval (warm: the shared cache), through aiohttp's test client; each the median of
``--repeats`` runs. Printed: the seconds, and the weight of the study page, of a trial page and of the
scripts and styles the pages load (plotly.js once, then cached by the browser), raw and gzip-compressed.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = ROOT / "studies" / "h200-llama8b-refined.yaml"
TEMPLATE = ROOT / "results" / "h200" / "h200-llama8b-refined.db"
FAILURES = ("oom", "startup_timeout")


def _templates() -> list[dict[str, Any]]:
    """The stored results of the template study's measured trials (as ``TrialResult.to_dict``)."""
    import optuna

    from tuner.search.record import read

    study = optuna.load_study(study_name="h200-llama8b-refined", storage=f"sqlite:///{TEMPLATE}")
    out = []
    for t in study.get_trials(deepcopy=False):
        r = read(t)
        if r.result is None or not r.result.steps:
            continue
        out.append(
            {
                "steps": [dict(s) for s in r.result.steps],
                "scored_step": r.result.scored_step,
                "gpu": dict(r.result.gpu),
                "server_metrics": dict(r.result.server_metrics),
                "memory_check": dict(r.result.memory_check),
                "capacity": dict(r.result.capacity),
                "bottleneck": r.result.bottleneck or "",
                "argv": list(r.argv),
                "env": {"vllm_version": r.vllm_version, "hardware": r.hardware},
            }
        )
    return out


def _scaled(step: dict[str, Any], speed: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in step.items():
        if k.endswith("_ms") and isinstance(v, dict):
            out[k] = {q: (x / speed if isinstance(x, int | float) else x) for q, x in v.items()}
        elif "throughput" in k and isinstance(v, int | float):
            out[k] = v * speed
        else:
            out[k] = v
    return out


def _result(params: dict[str, Any], template: dict[str, Any], rng: random.Random, now: float) -> Any:
    from tuner.measure.metrics import Summary
    from tuner.measure.result import TrialResult

    argv = [w for w in template["argv"] if not w.startswith("--")][:5]
    if rng.random() < 0.1:
        failure = rng.choice(FAILURES)
        return TrialResult(
            status=failure,
            argv=argv,
            message=f"{failure}: generated for the benchmark",
            log_tail=[f"line {i} of a generated log" for i in range(40)],
            started_at=now,
            ended_at=now + 40,
            flags=dict(params),
        )
    speed = rng.uniform(0.6, 1.5)
    steps = [Summary.from_dict(_scaled(s, speed)) for s in template["steps"]]
    scored = template["scored_step"] if template["scored_step"] is not None else 0
    return TrialResult(
        status="ok",
        argv=argv,
        summary=steps[scored],
        steps=steps,
        scored_step=scored,
        log_tail=[f"line {i} of a generated log" for i in range(40)],
        started_at=now,
        ended_at=now + 90,
        startup_s=rng.uniform(47, 101),
        flags=dict(params),
        env=template["env"],
        gpu=template["gpu"],
        server_metrics=template["server_metrics"],
        bottleneck=template["bottleneck"],
        memory_check=template["memory_check"],
        capacity=template["capacity"],
    )


def generate(path: Path, trials: int, seed: int = 0) -> None:
    """Write a study of ``trials`` finished trials and one RUNNING one to the SQLite file ``path``."""
    import optuna

    from tuner.config.spec import load_spec
    from tuner.progress import NullReporter
    from tuner.search import workers
    from tuner.search.study import open_study
    from tuner.search.tell import tell

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(SPEC)
    rng = random.Random(seed)
    templates = _templates()
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        work = Path(tmp) / "study.db"
        opened = open_study(spec, f"sqlite:///{work}", n_trials=trials + 1, must_exist=False)
        handle = opened.handle
        handle.study.sampler = optuna.samplers.RandomSampler(seed=seed)  # TPE over 1,000 trials takes minutes
        now = time.time() - 90.0 * trials
        for _ in range(trials):
            trial = handle.study.ask()
            result = _result(dict(trial.params), rng.choice(templates), rng, now)
            tell(handle, spec, trial, result, NullReporter())
            now += 90.0
        running = handle.study.ask()
        workers.claim(running, workers.this_worker())
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work, path)


def _weight(body: bytes) -> str:
    return f"{len(body) / 1024:,.0f} KiB ({len(gzip.compress(body)) / 1024:,.0f} KiB gzip)"


async def _time_pages(url: str, study: str, repeats: int) -> dict[str, Any]:
    from aiohttp.test_utils import TestClient, TestServer

    from tuner.web.app import make_app
    from tuner.web.readonly import open_readonly

    cold: list[float] = []
    warm: list[float] = []
    bodies: dict[str, bytes] = {}
    for _ in range(repeats):
        app = make_app(open_readonly(url), url=url, interval_s=60.0)
        async with TestClient(TestServer(app)) as client:
            for times in (cold, warm):
                t0 = time.perf_counter()
                resp = await client.get(f"/study/{study}")
                body = await resp.read()
                times.append(time.perf_counter() - t0)
                assert resp.status == 200, resp.status
            bodies["study page"] = body
            resp = await client.get(f"/study/{study}/trial/1")
            bodies["trial page"] = await resp.read()
            for name in ("dashboard.js", "dashboard.css", "plotly.min.js"):
                resp = await client.get(f"/static/{name}")
                bodies[name] = await resp.read()
    return {"cold": statistics.median(cold), "warm": statistics.median(warm), "bodies": bodies}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--db", type=Path, default=None)
    args = p.parse_args()
    db = args.db or ROOT / "build" / f"bench-dashboard-{args.trials}.db"
    if not db.exists():
        t0 = time.perf_counter()
        generate(db, args.trials)
        print(f"generated {args.trials} trials in {time.perf_counter() - t0:.1f} s: {db}")
    url = f"sqlite:///{db}"
    found = asyncio.run(_time_pages(url, "h200-llama8b-refined", args.repeats))
    print(
        f"study page, {args.trials} trials: {found['cold']:.3f} s cold (first refresh), "
        f"{found['warm']:.3f} s warm (cached refresh); median of {args.repeats}"
    )
    for name, body in found["bodies"].items():
        print(f"  {name}: {_weight(body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
