"""``tuner run`` / ``tuner resume STUDY.yaml [--n-trials N] [--timeout 8h] [--storage URL] [--gpus all|0,1]
[--sim-hardware H100] [--accept-changes]``:
create the study or go on with it, up to its budget (``resume`` refuses a study that does not exist yet; a
study file changed in a way that invalidates the stored trials is refused unless ``--accept-changes``:
:mod:`tuner.search.study`). ``--gpus``: trials in parallel on those GPUs (:mod:`tuner.search.parallel`).
``--sim-hardware``: the simulator's profile for the warm start and the per-trial predictions (it overrides
the file's ``prior.hardware``; a file without ``prior`` gets predictions, no warm start)."""

from __future__ import annotations

import argparse
import math
import os
import re

from tuner.cli.common import preflight
from tuner.cli.output import Console
from tuner.config.spec import StudySpec, load_spec
from tuner.errors import UsageError
from tuner.server.env import VISIBLE_DEVICES_ENV

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study", help="the study file (YAML)")
    c.add_argument("--n-trials", type=positive_int, help="the budget of finished trials (stored)")
    c.add_argument("--timeout", help="stop starting trials after this long: 8h, 30m, 90s")
    c.add_argument("--storage", help="storage URL (default: the study file's, else sqlite beside it)")
    c.add_argument(
        "--gpus",
        help="run trials in parallel, each on its own GPUs (tensor-parallel-size x pipeline-parallel-size "
        "of them): all, or a list of indices or UUIDs like 0,1,2,3 (default: the study file's resources.gpus)",
    )
    c.add_argument(
        "--sim-hardware",
        metavar="NAME",
        help="the simulator's hardware profile for the warm start and the predictions, like H200, H100 or L4 (an "
        "unknown name lists them; default: the study file's prior.hardware, else the GPU NVML names)",
    )
    add_accept_changes(c)


def add_accept_changes(c: argparse.ArgumentParser) -> None:
    """The ``--accept-changes`` flag (``run``, ``resume``, ``confirm``)."""
    c.add_argument(
        "--accept-changes",
        action="store_true",
        help="go on although the study file changed what the stored trials were measured under (search "
        "space, workload or its files, SLO, server); they stay, scored under the old rules",
    )


def handle(args: argparse.Namespace, console: Console) -> int:
    from tuner.cli.progress_rich import RichReporter
    from tuner.search.loop import run_study

    spec = with_sim_hardware(load_spec(args.study), args.sim_hardware)
    timeout = parse_duration(args.timeout) if args.timeout else None
    if args.storage is not None:
        from tuner.search.storage import parse_url

        parse_url(args.storage)
    gpus = resolve_gpus(args.gpus, spec)
    preflight(spec, console)
    with RichReporter() as reporter:
        outcome = run_study(
            spec,
            n_trials=args.n_trials,
            timeout_s=timeout,
            storage_url=args.storage,
            reporter=reporter,
            must_exist=args.command == "resume",
            accept_changes=args.accept_changes,
            gpus=gpus,
        )
    note = f" (repaired interrupted trials {outcome.repaired})" if outcome.repaired else ""
    console.info(
        f"study {outcome.study_name}: {outcome.complete}/{outcome.budget} trials finished, "
        f"{outcome.told} in this run, stopped by {outcome.stopped}{note}"
    )
    console.info(f"see the front: tuner pareto {args.study}")
    return 0


def with_sim_hardware(spec: StudySpec, name: str | None) -> StudySpec:
    """``spec`` with the simulator's profile ``name`` as its ``prior.hardware`` (a ``prior`` section with the
    defaults, warm start off, when the file has none); ``spec`` itself for None. Raises :class:`UsageError`
    for a profile the simulator does not have."""
    if name is None:
        return spec
    from tuner.config.spec import Prior
    from tuner.sim.hardware import get_hardware

    try:
        hw = get_hardware(name)
    except KeyError as e:
        raise UsageError(f"--sim-hardware: {e.args[0]}") from None
    prior = spec.prior if spec.prior is not None else Prior()
    return spec.model_copy(update={"prior": prior.model_copy(update={"hardware": hw.name})})


def resolve_gpus(arg: str | None, spec: StudySpec) -> tuple[str, ...]:
    """The GPUs for parallel trials: ``--gpus``, else the study file's ``resources.gpus``, else none (one
    trial at a time). ``all``: the GPUs NVML sees (those of ``CUDA_VISIBLE_DEVICES`` when it is set).
    Raises :class:`UsageError`."""
    from tuner.search.slots import PlacementError, parse_gpus

    given = arg if arg is not None else (spec.resources or {}).get("gpus")
    if given is None:
        return ()
    try:
        return parse_gpus(given, detect_gpus() if given == "all" else ())
    except PlacementError as e:
        raise UsageError(str(e)) from None


def detect_gpus() -> tuple[str, ...]:
    """This host's usable GPUs as ``CUDA_VISIBLE_DEVICES`` names (empty when NVML sees none)."""
    from tuner.measure.telemetry.nvml import gpu_memory_used_mib

    visible = os.environ.get(VISIBLE_DEVICES_ENV)
    used = gpu_memory_used_mib(visible_devices=visible)
    if not used:
        return ()
    if visible:
        return tuple(v.strip() for v in visible.split(","))[: len(used)]
    return tuple(str(i) for i in range(len(used)))


def parse_duration(text: str) -> float:
    """``"8h"``, ``"30m"``, ``"90s"``, ``"1h30m"``, ``"3600"`` -> seconds. Raises :class:`UsageError`."""
    t = text.strip().lower()
    try:
        seconds = float(t)
    except ValueError:
        parts = _DURATION_RE.findall(t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise UsageError(f"--timeout {text!r}: write it like 8h, 30m, 90s or 1h30m") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"--timeout {text!r}: must be positive")
    return seconds


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n
