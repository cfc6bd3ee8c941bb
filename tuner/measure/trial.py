"""One trial, end to end: params -> argv -> server -> load -> summary (+ telemetry) -> :class:`TrialResult`.

Contract of :func:`run_trial`:

* it never raises for a configuration that fails: the result's ``status`` says how (``infeasible`` by a
  rule before launch, ``oom``/``invalid_config``/``startup_timeout`` at start, ``crashed`` when the server
  died under load, ``load_errors`` when too many requests failed);
* the server is always stopped (its whole process group) before it returns or raises;
* ``KeyboardInterrupt`` propagates after the server is stopped, so the caller can mark the trial interrupted;
* a server that stops answering ``/health`` after the load (its engine died; vLLM's API process lingers a
  moment before it exits) is ``crashed``, like one that exited;
* nothing it returns holds a secret (:mod:`tuner.config.redact`): argv, flags, message and log tail are masked, and
  so is the server log it keeps. An API key (``server.args.api-key``, or ``VLLM_API_KEY`` in the server's
  environment) reaches vLLM through ``VLLM_API_KEY`` and the load as ``Authorization: Bearer``.

With ``url`` it measures an already running server and starts nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tuner.config.argv import Param, build_plan, trial_flags
from tuner.config.redact import Redactor, redact_file, spec_redactor
from tuner.config.spec import StudySpec, Workload
from tuner.errors import TrialFailure
from tuner.load.client import Target
from tuner.load.prompts import Prompt, Tokenizer, build_prompts, load_tokenizer
from tuner.load.runner import LoadPlan, run_load
from tuner.measure import capacity
from tuner.measure.metrics import Summary, summarize
from tuner.measure.result import TrialResult
from tuner.measure.telemetry.serverside import MetricsPoller
from tuner.progress import NullReporter, Reporter
from tuner.server.failures import INFEASIBLE

_R = TypeVar("_R")


def run_trial(
    spec: StudySpec,
    params: Mapping[str, Param],
    *,
    log_dir: Path,
    runtime_dir: Path,
    reporter: Reporter | None = None,
    url: str | None = None,
    trial_name: str = "trial",
    port_picker: Callable[[str], int] | None = None,
) -> TrialResult:
    """Measure one configuration (see the module docstring for the contract). ``port_picker`` chooses the
    server's port (default: a free one, :func:`tuner.server.process.free_port`)."""
    rep = reporter or NullReporter()
    started = time.time()
    flags, model = trial_flags(spec, params)
    redactor = spec_redactor(spec)
    if url is not None:
        return _finish(_measure_url(spec, url, model, rep, flags), started, redactor)

    rep.phase("checking")
    from tuner.config.space import prelaunch_violation

    reason = prelaunch_violation(flags)
    plan0 = build_plan(spec, params, port=0)
    if reason:
        result = TrialResult(status=INFEASIBLE, argv=plan0.argv, message=reason, flags=flags)
        return _finish(result, started, redactor)
    verdict = _memory_check(model, flags, spec.server.env.get("CUDA_VISIBLE_DEVICES"))
    if verdict and not verdict.get("fits", True):
        return _finish(
            TrialResult(
                status="oom",
                argv=plan0.argv,
                message=f"predicted before launch: {verdict.get('reason')}",
                flags=flags,
                memory_check=verdict,
                env=_environment(),
            ),
            started,
            redactor,
        )

    from tuner.server.process import free_port, http_status, start_server

    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{trial_name}.server.log"
    rep.phase("starting server")
    result = TrialResult(
        status="ok", log_path=str(log_path), flags=dict(flags), memory_check=verdict or {}, env=_environment()
    )
    server_env = {**spec.server.env, **plan0.env}
    try:
        with start_server(
            lambda port: build_plan(spec, params, port=port).argv,
            host=spec.server.host,
            env=server_env,
            log_path=log_path,
            runtime_dir=runtime_dir,
            startup_timeout_s=spec.server.startup_timeout_s,
            stop_timeout_s=spec.server.stop_timeout_s,
            port_picker=port_picker or free_port,
        ) as server:
            result.argv = list(server.argv)
            result.startup_s = server.startup_s
            target = Target(
                base_url=server.url,
                model=spec.served_model_name or model,
                api=spec.workload.api,
                headers=_auth_headers({**os.environ, **server_env}),
            )
            try:
                _measure_into(result, spec, target, model, rep, alive=server.alive)
            finally:
                rep.phase("stopping")
            if server.alive() and http_status(server.host, server.port, timeout_s=5.0) != 200:
                # the engine died: vLLM's API process answers 503, then exits; give it a moment
                deadline = time.monotonic() + 10.0
                while server.alive() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if server.alive():
                    server.stop()
            if server.returncode is not None:
                result.status = "crashed"
                result.message = _reason_from_tail(server.log_tail(200)) or "the server died under load"
                result.log_tail = server.log_tail(40)
    except TrialFailure as e:
        result.status = e.failure
        result.message = str(e).split(": ", 1)[-1]
        result.log_tail = list(e.log_tail)
        if not result.argv:
            result.argv = plan0.argv
    finally:
        redact_file(log_path, redactor)
    return _finish(result, started, redactor)


def _auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    """``Authorization: Bearer KEY`` when the server is given an API key (vLLM reads ``VLLM_API_KEY``)."""
    key = env.get("VLLM_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _measure_url(
    spec: StudySpec, url: str, model: str, rep: Reporter, flags: Mapping[str, object]
) -> TrialResult:
    result = TrialResult(status="ok", argv=[], log_path=None, env=_environment())
    key = flags.get("api-key")
    env = {**os.environ, **spec.server.env, **({"VLLM_API_KEY": str(key)} if isinstance(key, str) else {})}
    target = Target(
        base_url=url.rstrip("/"),
        model=spec.served_model_name or model,
        api=spec.workload.api,
        headers=_auth_headers(env),
    )
    _measure_into(result, spec, target, model, rep, alive=lambda: True)
    return result


def _finish(result: TrialResult, started: float, redactor: Redactor) -> TrialResult:
    result.started_at = started
    result.ended_at = time.time()
    return redact_result(result, redactor)


def redact_result(result: TrialResult, redactor: Redactor) -> TrialResult:
    """``result`` with every secret masked in what is stored or printed of it (in place; returned)."""
    result.argv = redactor.argv(result.argv)
    result.flags = redactor.flags(result.flags)
    result.message = redactor.text(result.message) if result.message is not None else None
    result.log_tail = [redactor.text(line) for line in result.log_tail]
    return result


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str) -> Tokenizer:
    return load_tokenizer(name)


@functools.lru_cache(maxsize=8)
def _prompts(
    name: str, count: int, input_tokens: int, shared: int, seed: int, api: str
) -> tuple[Prompt, ...]:
    return tuple(
        build_prompts(_tokenizer(name), count, input_tokens, shared_prefix_tokens=shared, seed=seed, api=api)
    )


def _measure_into(
    result: TrialResult,
    spec: StudySpec,
    target: Target,
    model: str,
    rep: Reporter,
    alive: Any,
) -> None:
    """Run the workload against ``target`` and fill ``result`` (summary, steps, status, agreement)."""
    w = spec.workload
    slo = spec.slo.limits()
    n_prompts = prompts_needed(spec)
    prompts = list(
        _prompts(w.tokenizer or model, n_prompts, w.input_tokens, w.shared_prefix_tokens, w.seed, w.api)
    )
    from tuner.measure.telemetry.nvml import GpuSampler

    visible = spec.server.env.get("CUDA_VISIBLE_DEVICES")
    with GpuSampler(visible_devices=visible, on_unavailable=rep.message) as gpu:
        run = _run_async(_drive(spec, target, prompts, rep, alive))
    steps = run.steps
    result.steps = steps
    idx = capacity.scored_step(steps, slo, w.max_failed_fraction) if w.mode == "capacity" else 0
    result.scored_step = idx if w.mode == "capacity" else None
    result.summary = steps[idx]
    start, end = run.windows[idx]
    result.gpu = gpu.summary(start, end)
    result.server_metrics.update(_agreement(run.before, run.after, steps))
    if run.poller is not None:
        from tuner.measure.telemetry.serverside import bottleneck

        view = run.poller.view(start, end)
        result.server_metrics["view"] = view.to_dict()
        seqs = result.flags.get("max-num-seqs")
        result.bottleneck = bottleneck(
            view, steps[idx].to_dict(), slo, max_num_seqs=seqs if isinstance(seqs, int) else None
        )
    if all(s.failed_fraction > w.max_failed_fraction for s in steps) and alive():
        result.status = "load_errors"
        first = next((e for s in steps for e in s.errors), "")
        result.message = (
            f"{steps[-1].failed} of {steps[-1].failed + steps[-1].completed} requests failed: {first}"
        )


def _run_async(coro: Coroutine[Any, Any, _R]) -> _R:
    """Run the load on uvloop when it is installed (about 20 % less client CPU per streamed chunk)."""
    from tuner.load.cancel import run_load

    try:
        import uvloop
    except ImportError:
        return run_load(coro)
    return run_load(coro, loop_factory=uvloop.new_event_loop)


@dataclass
class _Run:
    steps: list[Summary]
    windows: list[tuple[float, float]]  # monotonic (start, end) of each step
    before: str | None  # /metrics text before the measured phase
    after: str | None
    poller: MetricsPoller | None


async def _drive(spec: StudySpec, target: Target, prompts: list[Prompt], rep: Reporter, alive: Any) -> _Run:
    """Warm-up, then the measured phase with /metrics polled beside it."""
    w = spec.workload
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        warm = LoadPlan(
            output_tokens=w.output_tokens,
            concurrency=max(1, w.warmup_requests),  # all at once: a burst that exercises batch shapes
            requests=w.warmup_requests,
            request_timeout_s=w.request_timeout_s,
            seed=w.seed,
        )
        if w.warmup_requests:
            rep.phase("warm-up", f"{w.warmup_requests} requests")
            await run_load(target, prompts, warm, session=session)
        prompts = prompts[w.warmup_requests :] + prompts[: w.warmup_requests]  # measured: fresh prompts first
        before = await _scrape(session, target.base_url)
        poller = MetricsPoller(session, target.base_url) if before is not None else None
        async with poller if poller is not None else contextlib.nullcontext():
            steps, windows = await _steps(spec, target, prompts, rep, alive, session)
        after = await _scrape(session, target.base_url)
    return _Run(steps, windows, before, after, poller)


async def _steps(
    spec: StudySpec,
    target: Target,
    prompts: list[Prompt],
    rep: Reporter,
    alive: Any,
    session: aiohttp.ClientSession,
) -> tuple[list[Summary], list[tuple[float, float]]]:
    """The measured phase: one fixed run, or the capacity steps. Returns summaries and their time windows."""
    w = spec.workload
    slo = spec.slo.limits()
    steps: list[Summary] = []
    windows: list[tuple[float, float]] = []
    if w.mode == "fixed":
        plan = _plan(w, w.concurrency, w.request_rate, w.requests, w.seed)
        rep.phase("load", _describe(plan))
        t0 = time.monotonic()
        records = await run_load(target, prompts, plan, session=session)
        windows.append((t0, time.monotonic()))
        steps.append(summarize(records, slo, load=_load_info(plan)))
    else:
        is_rate = w.request_rate is not None
        sent = 0  # measured requests so far: each step starts at the first prompt not sent yet
        for i, level in enumerate(capacity.levels(w.capacity)):
            n = capacity.step_requests(level, w.requests, w.capacity, is_rate)
            plan = _plan(
                w,
                None if is_rate else max(1, int(level)),
                level if is_rate else None,
                None if w.duration_s else n,
                w.seed + i,
            )
            rep.phase("load", f"step {i + 1}: {_describe(plan)}")
            t0 = time.monotonic()
            records = await run_load(target, _rotate(prompts, sent), plan, session=session)
            sent += sum(1 for r in records if not r.warmup)
            windows.append((t0, time.monotonic()))
            steps.append(summarize(records, slo, load=_load_info(plan)))
            if not alive():
                break
            if capacity.should_stop(steps, slo, w.capacity.stop_factor, w.max_failed_fraction):
                break
    return steps, windows


@functools.lru_cache(maxsize=1)
def _environment_cached() -> str:
    from tuner.measure.envinfo import environment

    return json.dumps(environment(), default=str)


def _environment() -> dict[str, Any]:
    """vLLM/torch versions and the hardware, once per process."""
    try:
        return dict(json.loads(_environment_cached()))
    except Exception:  # facts are nice to have; never fail a trial for them
        return {}


def _memory_check(model: str, flags: Mapping[str, Any], visible: str | None) -> dict[str, Any] | None:
    """The predictive memory check, on a GPU host with a local model folder; None elsewhere."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return None
    from tuner.measure.memory import check_fits
    from tuner.measure.telemetry.nvml import static_facts

    facts = static_facts(visible_devices=visible)
    if not facts or not facts.get("memory_total_mib"):
        return None
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    return check_fits(cfg, flags, int(facts["memory_total_mib"]) << 20).to_dict()


def _plan(
    w: Workload, concurrency: int | None, rate: float | None, requests: int | None, seed: int
) -> LoadPlan:
    """A measured load of the workload's shape at one level (duration and timeout from the file)."""
    return LoadPlan(
        output_tokens=w.output_tokens,
        concurrency=concurrency,
        request_rate=rate,
        requests=requests,
        duration_s=w.duration_s,
        request_timeout_s=w.request_timeout_s,
        seed=seed,
    )


def _rotate(prompts: list[Prompt], offset: int) -> list[Prompt]:
    """The prompts from ``offset`` on (wrapping), so a step does not replay the prompts of earlier steps."""
    k = offset % len(prompts) if prompts else 0
    return prompts[k:] + prompts[:k]


#: prompts built per trial at most (building costs ~1.5 ms per 1024-token prompt); beyond it they repeat
MAX_PROMPTS = 4096


def prompts_needed(spec: StudySpec) -> int:
    """Distinct prompts for one trial: warm-up plus every measured request, so no request repeats an earlier
    prompt (a repeat would hit the prefix cache and fake a fast TTFT). Duration-bounded loads are estimated
    (rate x duration, or 1024); past :data:`MAX_PROMPTS` prompts repeat."""
    w = spec.workload
    if w.mode == "fixed":
        if w.requests is not None:
            measured = w.requests
        elif w.request_rate is not None and w.duration_s is not None:
            measured = int(w.request_rate * w.duration_s * 1.2) + 1
        else:
            measured = 1024
    else:
        is_rate = w.request_rate is not None
        if w.duration_s is not None:
            measured = sum(
                int(lv * w.duration_s * 1.2) + 1 if is_rate else 1024 // 4
                for lv in capacity.levels(w.capacity)
            )
        else:
            measured = sum(
                capacity.step_requests(lv, w.requests, w.capacity, is_rate)
                for lv in capacity.levels(w.capacity)
            )
    return max(1, min(w.warmup_requests + measured, MAX_PROMPTS))


def _describe(plan: LoadPlan) -> str:
    how = f"concurrency {plan.concurrency}" if plan.request_rate is None else f"{plan.request_rate:g} req/s"
    size = f"{plan.requests} requests" if plan.requests else f"{plan.duration_s:g} s"
    return f"{how}, {size}"


def _load_info(plan: LoadPlan) -> dict[str, Any]:
    return {
        k: v
        for k, v in {
            "concurrency": plan.concurrency,
            "request_rate": plan.request_rate,
            "requests": plan.requests,
            "duration_s": plan.duration_s,
        }.items()
        if v is not None
    }


async def _scrape(session: aiohttp.ClientSession, base_url: str) -> str | None:
    with contextlib.suppress(Exception):
        async with session.get(base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status == 200:
                return await r.text()
    return None


def _agreement(before: str | None, after: str | None, steps: list[Summary]) -> dict[str, Any]:
    """The server's own view of the measured requests (Prometheus deltas) beside the client's."""
    if before is None or after is None:
        return {}
    from tuner.measure.telemetry.prometheus import counter_delta, histogram_delta

    out: dict[str, Any] = {}
    ttft = histogram_delta(before, after, "vllm:time_to_first_token_seconds")
    itl = histogram_delta(before, after, "vllm:inter_token_latency_seconds") or histogram_delta(
        before, after, "vllm:time_per_output_token_seconds"
    )
    gen = counter_delta(before, after, "vllm:generation_tokens_total")
    if ttft and ttft[1] > 0:
        out["server_ttft_mean_ms"] = ttft[0] / ttft[1] * 1e3
        out["server_requests"] = int(ttft[1])
    if itl and itl[1] > 0:
        out["server_itl_mean_ms"] = itl[0] / itl[1] * 1e3
    if gen is not None:
        out["server_generation_tokens"] = int(gen)
    out["client_generation_tokens"] = sum(s.generated_tokens_total for s in steps)
    n = sum(s.completed for s in steps)
    if n:
        out["client_ttft_mean_ms"] = _weighted(steps, "ttft_ms")
        out["client_itl_mean_ms"] = _weighted(steps, "itl_ms")
    return {"agreement": out} if out else {}


def _weighted(steps: list[Summary], attr: str) -> float | None:
    num = den = 0.0
    for s in steps:
        d = getattr(s, attr)
        if d.count and math.isfinite(d.mean):
            num += d.mean * d.count
            den += d.count
    return num / den if den else None


def _reason_from_tail(tail: list[str]) -> str:
    from tuner.server.failures import extract_reason

    return extract_reason(tail)


def result_json(result: TrialResult) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=False)
