"""One trial, one way: params -> argv -> server -> load steps -> summary (+ telemetry) -> :class:`TrialResult`.

Each stage hands the next an immutable value; the :class:`TrialResult` is built once, at the end, by
:meth:`_Outcome.result`, which is also the one place its secrets are masked.

Contract of :func:`run_trial`:

* it never raises for a configuration that fails: the result's ``status`` says how (``infeasible`` by a
  rule before launch, ``oom`` by the predictive memory check or at start, ``invalid_config`` /
  ``startup_timeout`` at start, ``crashed`` when the server died under load, ``load_errors`` when too many
  requests failed);
* the rules known before launch (:func:`tuner.config.space.prelaunch_violation`, then the memory check)
  are checked here, and a refused configuration starts no server;
* then, where NVML answers, the server's GPUs must have the free memory its ``gpu-memory-utilization``
  claims (:mod:`tuner.measure.gpufree`): while another process holds it the trial waits (one progress
  line), up to ``resources.gpu_wait_s``, then raises :class:`~tuner.measure.gpufree.GpuBusy` (no server
  started; not the configuration's failure: the study loop gives the trial back and queues it again);
* the traffic is built first (once per study, :func:`tuner.load.traffic.build_traffic`): traffic it cannot
  build (a bad file, lengths the tokenizer cannot make, every request over ``max-model-len``) raises
  :class:`~tuner.errors.UsageError` before any server starts;
* the server is always stopped (its whole process group) before it returns or raises;
* ``KeyboardInterrupt`` propagates after the server is stopped, so the caller can mark the trial interrupted;
* after the load :meth:`tuner.server.process.VllmServer.check_alive` decides whether the server died: it
  exited, or it stopped answering ``/health`` (its engine died; vLLM's API process lingers a moment before
  it exits). Such a trial is ``crashed`` and keeps what its load measured;
* nothing it returns holds a secret (:mod:`tuner.config.redact`): argv, flags, message and log tail are
  masked, and so is the server log it keeps. An API key (``server.args.api-key``, or ``VLLM_API_KEY`` in
  the server's environment) reaches vLLM through ``VLLM_API_KEY`` and every request as
  ``Authorization: Bearer`` (:func:`tuner.server.env.auth_headers`).

With ``url`` it measures an already running server and starts nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tuner.config.argv import build_plan, trial_flags
from tuner.config.paths import study_dir
from tuner.config.redact import Redactor, redact_file, spec_redactor
from tuner.config.space import prelaunch_violation
from tuner.config.spec import FlagValue, StudySpec
from tuner.errors import ServerCrashed, TrialFailure, UsageError
from tuner.load.client import Target
from tuner.load.conversation import Conversation
from tuner.load.prompts import Tokenizer, load_tokenizer
from tuner.load.runner import LoadPlan, conversations_used, offer_load
from tuner.load.traffic import Traffic, build_traffic
from tuner.measure import capacity
from tuner.measure.metrics import Summary
from tuner.measure.result import TrialResult
from tuner.measure.steps import conversations_needed, mean_turns, measure_steps
from tuner.measure.telemetry.serverside import MetricsPoller, agreement, scrape_text
from tuner.progress import NullReporter, Reporter
from tuner.server.env import auth_headers
from tuner.server.failures import INFEASIBLE, OOM

_R = TypeVar("_R")


def run_trial(
    spec: StudySpec,
    params: Mapping[str, FlagValue],
    *,
    log_dir: Path,
    runtime_dir: Path,
    reporter: Reporter | None = None,
    url: str | None = None,
    trial_name: str = "trial",
    port_picker: Callable[[str], int] | None = None,
    best_so_far: float | None = None,
    nvml: Any | None = None,
) -> TrialResult:
    """Measure one configuration (see the module docstring for the contract). ``port_picker`` chooses the
    server's port (default: a free one, :func:`tuner.server.ports.free_port`); ``best_so_far`` (the
    study's best SLO capacity, output tok/s) lets capacity mode skip refining a bracket that cannot beat it;
    ``nvml``: the NVML module the GPU-memory check reads (default ``pynvml``; tests pass a fake)."""
    rep = reporter or NullReporter()
    started = time.time()
    flags, model = trial_flags(spec, params)
    redactor = spec_redactor(spec)
    _traffic(spec, spec.workload.tokenizer or model, _max_model_len(flags))  # bad traffic: before any server
    if url is not None:
        target = _target(spec, model, url.rstrip("/"), flags)
        outcome = _Outcome(
            env=_environment(),
            measured=_measure(spec, target, model, rep, lambda: True, flags, best_so_far),
        )
    else:
        log_path = log_dir / f"{trial_name}.server.log"
        try:
            outcome = _launch(
                spec, params, flags, model, rep, log_path, runtime_dir, port_picker, best_so_far, nvml
            )
        finally:
            redact_file(log_path, redactor)  # the log the server wrote, whatever happened
    return outcome.result(started, time.time(), redactor)


@dataclass(frozen=True)
class _Failure:
    """How a trial failed: a failure class, one message and the log tail that shows it."""

    status: str
    message: str
    log_tail: Sequence[str] = ()

    @classmethod
    def of(cls, e: TrialFailure) -> _Failure:
        return cls(e.failure, str(e).split(": ", 1)[-1], tuple(e.log_tail))


@dataclass(frozen=True)
class _Measured:
    """What the load measured: every step, the scored one, and the telemetry of the scored step's window."""

    steps: Sequence[Summary]
    scored: int  # index of the scored step (0 in fixed mode)
    capacity_mode: bool
    gpu: Mapping[str, Any]
    server_metrics: Mapping[str, Any]
    bottleneck: str
    failure: _Failure | None  # load_errors when every step failed too many requests
    capacity: Mapping[str, Any] = field(default_factory=dict)  # levels, stop, bracket, load_s, pruned
    traffic: Mapping[str, Any] = field(default_factory=dict)  # what was sent: Traffic.summary()


@dataclass(frozen=True)
class _Outcome:
    """Everything one trial learnt, stage by stage; :meth:`result` turns it into the :class:`TrialResult`."""

    argv: Sequence[str] = ()
    flags: Mapping[str, Any] = field(default_factory=dict)
    log_path: Path | None = None
    env: Mapping[str, Any] = field(default_factory=dict)
    memory_check: Mapping[str, Any] = field(default_factory=dict)
    startup_s: float | None = None
    measured: _Measured | None = None
    failure: _Failure | None = None  # before or at start, or the server died under load

    def result(self, started: float, ended: float, redactor: Redactor) -> TrialResult:
        """The trial's result, with every secret masked in what is stored or printed of it."""
        m = self.measured
        failure = self.failure or (m.failure if m else None)
        return TrialResult(
            status=failure.status if failure else "ok",
            argv=redactor.argv(self.argv),
            log_path=str(self.log_path) if self.log_path is not None else None,
            summary=m.steps[m.scored] if m else None,
            steps=list(m.steps) if m else [],
            scored_step=m.scored if m and m.capacity_mode else None,
            message=redactor.text(failure.message) if failure else None,
            log_tail=[redactor.text(line) for line in failure.log_tail] if failure else [],
            started_at=started,
            ended_at=ended,
            startup_s=self.startup_s,
            flags=redactor.flags(self.flags),
            env=dict(self.env),
            gpu=dict(m.gpu) if m else {},
            server_metrics=dict(m.server_metrics) if m else {},
            bottleneck=m.bottleneck if m else "",
            memory_check=dict(self.memory_check),
            capacity=dict(m.capacity) if m else {},
            traffic=dict(m.traffic) if m else {},
        )


def _launch(
    spec: StudySpec,
    params: Mapping[str, FlagValue],
    flags: Mapping[str, Any],
    model: str,
    rep: Reporter,
    log_path: Path,
    runtime_dir: Path,
    port_picker: Callable[[str], int] | None,
    best_so_far: float | None,
    nvml: Any | None = None,
) -> _Outcome:
    """The rules known before launch, then start the server, measure it and stop it."""
    rep.phase("checking")
    plan = build_plan(spec, params, port=0)
    reason = prelaunch_violation(flags)
    if reason:
        return _Outcome(argv=plan.argv, flags=flags, failure=_Failure(INFEASIBLE, reason))
    verdict = _memory_check(model, flags, spec.server.env.get("CUDA_VISIBLE_DEVICES"))
    if verdict and not verdict.get("fits", True):
        why = f"predicted before launch: {verdict.get('reason')}"
        return _Outcome(
            argv=plan.argv, flags=flags, env=_environment(), memory_check=verdict, failure=_Failure(OOM, why)
        )
    _wait_for_gpu_memory(spec, flags, runtime_dir, rep, nvml)  # GpuBusy: given back, not told
    from tuner.server.ports import free_port
    from tuner.server.process import start_server_with_retry

    launch = _Outcome(
        argv=plan.argv, flags=flags, log_path=log_path, env=_environment(), memory_check=verdict or {}
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rep.phase("starting server")
    try:
        with start_server_with_retry(
            lambda port: build_plan(spec, params, port=port).argv,
            host=spec.server.host,
            env={**spec.server.env, **plan.env},
            log_path=log_path,
            runtime_dir=runtime_dir,
            startup_timeout_s=spec.server.startup_timeout_s,
            stop_timeout_s=spec.server.stop_timeout_s,
            port_picker=port_picker or free_port,
        ) as server:
            launch = dataclasses.replace(launch, argv=server.argv, startup_s=server.startup_s)
            target = _target(spec, model, server.url, flags)
            try:
                measured = _measure(spec, target, model, rep, server.alive, flags, best_so_far)
            finally:
                rep.phase("stopping")
            try:
                server.check_alive()
            except ServerCrashed as e:
                return dataclasses.replace(launch, measured=measured, failure=_Failure.of(e))
            return dataclasses.replace(launch, measured=measured)
    except TrialFailure as e:  # the server did not start
        return dataclasses.replace(launch, failure=_Failure.of(e))


def _target(spec: StudySpec, model: str, base_url: str, flags: Mapping[str, Any]) -> Target:
    """Where the load goes, with the API key the server demands."""
    return Target(
        base_url=base_url,
        model=spec.served_model_name or model,
        api=spec.workload.api,
        headers=auth_headers(flags, spec.server.env),
    )


def _measure(
    spec: StudySpec,
    target: Target,
    model: str,
    rep: Reporter,
    alive: Callable[[], bool],
    flags: Mapping[str, Any],
    best_so_far: float | None = None,
) -> _Measured:
    """Run the workload against ``target``: the steps, the scored one, its telemetry and the load's verdict."""
    w = spec.workload
    slo = spec.slo.limits()
    traffic = _traffic(spec, w.tokenizer or model, _max_model_len(flags))
    if not traffic.conversations:
        raise UsageError(f"workload: all {traffic.dropped} requests were dropped (longer than max-model-len)")
    from tuner.measure.telemetry.nvml import GpuSampler

    visible = spec.server.env.get("CUDA_VISIBLE_DEVICES")

    def no_telemetry(reason: str) -> None:
        rep.message(f"GPU telemetry off (NVML: {reason}); the study goes on without GPU figures")

    with GpuSampler(visible_devices=visible, on_unavailable=no_telemetry) as gpu:
        run = _run_async(_drive(spec, target, traffic.conversations, rep, alive, best_so_far))
    steps = run.steps
    capacity_mode = run.ladder is not None
    idx = run.ladder.scored if run.ladder is not None else 0
    start, end = run.windows[idx]
    server_metrics = agreement(run.before, run.after, steps)
    verdict = ""
    if run.poller is not None:
        from tuner.measure.telemetry.serverside import bottleneck

        view = run.poller.view(start, end)
        server_metrics["view"] = view.to_dict()
        seqs = flags.get("max-num-seqs")
        seqs = seqs if isinstance(seqs, int) else None
        verdict = bottleneck(view, steps[idx].to_dict(), slo, max_num_seqs=seqs)
    return _Measured(
        steps=tuple(steps),
        scored=idx,
        capacity_mode=capacity_mode,
        gpu=gpu.summary(start, end),
        server_metrics=server_metrics,
        bottleneck=verdict,
        failure=_load_errors(steps, w.max_failed_fraction),
        capacity=_capacity_info(run.ladder, run.windows),
        traffic=traffic.summary(),
    )


def _capacity_info(ladder: capacity.Ladder | None, windows: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """What a capacity run stores beside its steps: levels, why it stopped, the bracket, load seconds."""
    if ladder is None:
        return {}
    return {
        "levels": list(ladder.levels),
        "stop": ladder.stop,
        "bracket": ladder.bracket.to_dict() if ladder.bracket is not None else None,
        "load_s": round(sum(end - start for start, end in windows), 3),
        "pruned": sum(1 for s in ladder.steps if s.pruned is not None),
    }


def _load_errors(steps: Sequence[Summary], max_failed_fraction: float) -> _Failure | None:
    """``load_errors`` when every step failed more than ``max_failed_fraction`` of its requests. Steps cut
    short because their SLO verdict was settled say nothing of failures: a trial of only such steps broke
    the SLO, it did not fail its requests."""
    judged = [s for s in steps if s.pruned is None]
    if not judged or not all(s.failed_fraction > max_failed_fraction for s in judged):
        return None
    first = next((e for s in judged for e in s.errors), "")
    last = judged[-1]
    return _Failure(
        "load_errors", f"{last.failed} of {last.failed + last.completed} requests failed: {first}"
    )


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str) -> Tokenizer:
    return load_tokenizer(name)


#: traffic built in this process, by what decides it (a study's trials share one; see :func:`_traffic`)
_TRAFFIC: dict[tuple[str, str, int, int | None, str], Traffic] = {}
_TRAFFIC_KEPT = 4


def _traffic(spec: StudySpec, tokenizer: str, max_model_len: int | None) -> Traffic:
    """The trial's traffic (:func:`tuner.load.traffic.build_traffic`), built once per workload, tokenizer
    and ``max-model-len``; dataset paths resolved beside the study file."""
    w = spec.workload
    base_dir = study_dir(spec)
    count = conversations_needed(spec, mean_turns(w, base_dir))
    key = (w.model_dump_json(by_alias=True), tokenizer, count, max_model_len, str(base_dir))
    if key not in _TRAFFIC:
        while len(_TRAFFIC) >= _TRAFFIC_KEPT:
            del _TRAFFIC[next(iter(_TRAFFIC))]
        _TRAFFIC[key] = build_traffic(
            w, _tokenizer(tokenizer), count, api=w.api, max_model_len=max_model_len, base_dir=base_dir
        )
    return _TRAFFIC[key]


def _max_model_len(flags: Mapping[str, Any]) -> int | None:
    """``max-model-len`` of the effective flags (``server.args`` and the trial's), when it is a number."""
    v = flags.get("max-model-len")
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    return int(v) if isinstance(v, str) and v.isdigit() else None


def _run_async(coro: Coroutine[Any, Any, _R]) -> _R:
    """Run the load on uvloop when it is installed (about 20 % less client CPU per streamed chunk)."""
    from tuner.load.cancel import run_cancellable

    try:
        import uvloop
    except ImportError:
        return run_cancellable(coro)
    return run_cancellable(coro, loop_factory=uvloop.new_event_loop)


@dataclass
class _Run:
    steps: list[Summary]
    windows: list[tuple[float, float]]  # monotonic (start, end) of each step
    ladder: capacity.Ladder | None  # capacity mode: the scored step, why it stopped, the bracket
    before: str | None  # /metrics text before the measured phase
    after: str | None
    poller: MetricsPoller | None


async def _drive(
    spec: StudySpec,
    target: Target,
    conversations: Sequence[Conversation],
    rep: Reporter,
    alive: Callable[[], bool],
    best_so_far: float | None,
) -> _Run:
    """Warm-up, then the measured phase with /metrics polled beside it."""
    w = spec.workload
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    # the session's headers (the API key) go with the load, the /metrics scrapes and the poller alike
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=target.headers) as session:
        warm = LoadPlan(
            concurrency=max(1, w.warmup_requests),  # all at once: a burst that exercises batch shapes
            requests=w.warmup_requests,
            request_timeout_s=w.request_timeout_s,
            seed=w.seed,
        )
        if w.warmup_requests:
            rep.phase("warm-up", f"{w.warmup_requests} requests")
            used = conversations_used(await offer_load(target, conversations, warm, session=session))
            used %= len(conversations)
            conversations = [*conversations[used:], *conversations[:used]]  # measured: fresh ones first
        before = await scrape_text(session, target.base_url)
        poller = MetricsPoller(session, target.base_url) if before is not None else None
        async with poller if poller is not None else contextlib.nullcontext():
            steps, windows, ladder = await measure_steps(
                spec, target, conversations, rep, alive, session, best_so_far
            )
        after = await scrape_text(session, target.base_url)
    return _Run(steps, windows, ladder, before, after, poller)


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


def _wait_for_gpu_memory(
    spec: StudySpec, flags: Mapping[str, Any], runtime_dir: Path, rep: Reporter, nvml: Any | None
) -> None:
    """Wait while the server's GPUs (the first tensor x pipeline parallel of ``CUDA_VISIBLE_DEVICES``) lack
    the free memory ``gpu-memory-utilization`` claims; :class:`GpuBusy` when it does not clear in
    ``resources.gpu_wait_s``. Nothing to do without NVML or with a ``gpu-memory-utilization`` not a number."""
    from tuner.config.spec import DEFAULT_GPU_WAIT_S
    from tuner.load.cancel import sleep_cancellable
    from tuner.measure.gpufree import FreeVerdict, GpuBusy, check_free, wait_for_free
    from tuner.measure.memory import gpu_memory_utilization
    from tuner.measure.telemetry.nvml import gpu_memory_state
    from tuner.search.slots import PlacementError, trial_size

    gmu = gpu_memory_utilization(flags)
    if gmu is None:
        return
    try:
        size: int | None = trial_size(flags)
    except PlacementError:
        size = None
    visible = spec.server.env.get("CUDA_VISIBLE_DEVICES")
    wait_s = float((spec.resources or {}).get("gpu_wait_s", DEFAULT_GPU_WAIT_S))

    def read() -> FreeVerdict | None:
        state = gpu_memory_state(nvml, visible)
        if state is None:
            return None
        verdict = check_free(state[:size], gmu)
        return verdict if verdict.ok else check_free(state[:size], gmu, _own_server_pids(runtime_dir))

    def notice(text: str) -> None:
        rep.phase("waiting for GPU memory", text)

    verdict = wait_for_free(read, wait_s=wait_s, clock=time.monotonic, sleep=sleep_cancellable, notice=notice)
    if verdict is not None:
        raise GpuBusy(verdict, wait_s)


def _own_server_pids(runtime_dir: Path) -> set[int]:
    """Every process of the servers tuner started (the process groups of the pidfiles in ``runtime_dir``)."""
    from tuner.server.procs import process_group_members, read_pidfiles

    return {pid for _, r in read_pidfiles(runtime_dir) for pid in process_group_members(int(r["pgid"]))}
