"""Exit status + log tail -> a failure class, and the one log line that says why. Pure: no I/O.

Classes (each stored with the trial, together with the last log lines):

* ``oom``              weights or the KV cache do not fit (GPU), or on the CPU build "less than desired CPU
                       memory utilization"; also "No available memory for the cache blocks".
* ``invalid_config``   vLLM rejected the flags: argparse errors (exit 2), pydantic ValidationError, an
                       unsupported block size / quantization / attention backend.
* ``startup_timeout``  not healthy before the deadline.
* ``crashed``          the server died while under load, or exited at start for a reason none of the rules
                       below recognises.
* ``load_errors``      too many requests failed while the server stayed up.
* ``port_in_use``      the port was taken between choice and bind (internal: the runner retries).
* ``gpu_busy``         not a property of the configuration: before the start, a GPU of the trial's set lacked
                       the free memory ``gpu-memory-utilization`` asks for (another process held it) for the
                       whole wait (:mod:`tuner.measure.gpufree`); the trial is given back (FAIL) and queued
                       again, never told as a failure of its configuration.

Contract of :func:`classify_start_failure` (the server never became healthy):

1. a line matching an ``oom`` rule wins, then ``port_in_use``, then a specific ``invalid_config`` rule
   (argparse, pydantic, unsupported block size / backend / quantization);
2. if the deadline passed (``timed_out``) and no such rule matched: ``startup_timeout``;
3. then the generic ``invalid_config`` rules (a ``ValueError`` / ``NotImplementedError`` line: vLLM checks
   its config with those), and exit status 2 (argparse's);
4. otherwise ``crashed``.

:func:`classify_runtime_failure` (the server died after it was healthy) always gives ``crashed``: the class
says *when* it died; :func:`extract_reason` says why (an out-of-memory line, for instance).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

FAILURE_CLASSES = ("oom", "invalid_config", "startup_timeout", "crashed", "load_errors")
#: not a property of the configuration: the trial is re-queued, not counted
INTERRUPTED = "interrupted"
#: a configuration refused before launch by a rule (no server start)
INFEASIBLE = "infeasible"
#: the port was taken between choice and bind; never stored: the caller retries on another port
PORT_IN_USE = "port_in_use"
#: the trial's GPUs lacked free memory before the start (another process held it): given back, queued again
GPU_BUSY = "gpu_busy"

OOM = "oom"
INVALID_CONFIG = "invalid_config"
STARTUP_TIMEOUT = "startup_timeout"
CRASHED = "crashed"
LOAD_ERRORS = "load_errors"

#: the longest reason :func:`extract_reason` returns (characters)
MAX_REASON_CHARS = 400


@dataclass(frozen=True)
class Rule:
    """A log pattern and the failure class it proves. ``generic`` rules only count after a real exit."""

    failure: str
    pattern: re.Pattern[str]
    generic: bool = False


def _rule(failure: str, pattern: str, *, generic: bool = False) -> Rule:
    return Rule(failure, re.compile(pattern, re.IGNORECASE), generic)


#: In priority order. The first rule that matches any line decides the class, and its first matching line
#: is the reason. Texts are from vLLM's CPU build 0.32 and GPU builds 0.6-0.26, PyTorch and uvicorn.
RULES: tuple[Rule, ...] = (
    # --- oom: the weights, activations or KV cache do not fit
    _rule(OOM, r"less than desired (cpu|gpu) memory utilization"),  # vLLM startup memory check
    _rule(OOM, r"no available memory for the cache blocks"),
    _rule(OOM, r"cuda out of memory|cuda error: out of memory|hip out of memory|outofmemoryerror"),
    _rule(OOM, r"larger than the maximum number of tokens that can be stored in kv cache"),
    _rule(OOM, r"larger than the available kv cache memory"),
    _rule(OOM, r"insufficient memory|not enough memory|cannot allocate memory|\bMemoryError\b"),
    # --- port_in_use: someone bound the port between our choice and the server's bind
    _rule(PORT_IN_USE, r"address already in use|\[errno 98\]|\[errno 48\]|\[winerror 10048\]"),
    # --- invalid_config, specific: vLLM (or argparse) refused the flags
    _rule(INVALID_CONFIG, r"unrecognized arguments|error: argument |invalid choice|expected one argument"),
    _rule(INVALID_CONFIG, r"^\s*value error, "),  # the telling line inside a pydantic ValidationError
    _rule(INVALID_CONFIG, r"validation errors? for \w+|\bValidationError\b"),
    _rule(INVALID_CONFIG, r"no common block size"),
    _rule(INVALID_CONFIG, r"no valid attention backend"),
    _rule(INVALID_CONFIG, r"block.?size.{0,40}not supported|unsupported block.?size"),
    _rule(INVALID_CONFIG, r"quantization.{0,80}(not supported|unsupported|is not available)"),
    _rule(INVALID_CONFIG, r"unknown quantization method|cannot find the config file for \w+"),
    _rule(INVALID_CONFIG, r"\b(ValueError|NotImplementedError|TypeError)\b.{0,200}\bnot (yet )?supported"),
    # --- invalid_config, generic: config checks raise ValueError; only trusted once the process exited
    _rule(INVALID_CONFIG, r"\b(ValueError|NotImplementedError)\b(: |$)", generic=True),
)

#: lines that name a failure without saying why: a reason is taken from them only as a last resort
_NOISE = re.compile(
    r"engine core initialization failed|^traceback \(most recent call last\)|the above exception was the direct"
    r"|^during handling of the above exception|^\s*\^+\s*$|^\s*~+\s*$",
    re.IGNORECASE,
)
#: a traceback's last line (``RuntimeError: ...``, ``torch.OutOfMemoryError: ...``) or argparse's ``prog: error:``
_EXCEPTION_LINE = re.compile(r"^([\w.]+\.)?[A-Z]\w*(Error|Exception|Interrupt|Exit)\b(:|$)|^\S+: error: ")
_PYDANTIC_TYPE = re.compile(r"\s*\[type=\w+,.*$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: vLLM's log prefixes: ``(EngineCore_DP0 pid=12)``, ``(APIServer pid=7)``, ``ERROR 11-23 20:46:01 [core.py:7]``
_PROCESS_PREFIX = re.compile(r"^\s*\(\w[\w.-]* pid=\d+\)\s*")
_LEVEL_PREFIX = re.compile(
    r"^\s*(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s+\d\d-\d\d\s+\d\d:\d\d:\d\d(?:\.\d+)?\s+(\[[^\]]*\]\s*)?"
)


def clean_line(line: str) -> str:
    """One log line without ANSI colours, vLLM's process/level/time prefixes and surrounding blanks."""
    text = _ANSI.sub("", line).replace("\r", "")
    text = _PROCESS_PREFIX.sub("", text)
    text = _LEVEL_PREFIX.sub("", text)
    return text.strip()


def _lines(log_tail: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in log_tail:
        for part in raw.splitlines() or [""]:
            line = clean_line(part)
            if line:
                out.append(line)
    return out


def _match(lines: Sequence[str], *, include_generic: bool) -> tuple[Rule, str] | None:
    """The first rule (in priority order) matching some line, with the first line it matches (the root
    cause comes first: later lines repeat it, wrapped in RuntimeErrors)."""
    for rule in RULES:
        if rule.generic and not include_generic:
            continue
        for line in lines:
            if rule.pattern.search(line):
                return rule, line
    return None


def classify_start_failure(returncode: int | None, log_tail: Sequence[str], *, timed_out: bool) -> str:
    """The failure class of a server that never answered ``/health`` with 200.

    ``returncode`` is the exit status (negative: killed by that signal; ``None``: it had not exited, e.g. it
    was stopped by tuner); ``timed_out`` says the startup deadline passed. Returns one of ``oom``,
    ``invalid_config``, ``startup_timeout``, ``port_in_use`` or ``crashed`` (see the module contract).
    """
    lines = _lines(log_tail)
    found = _match(lines, include_generic=False)
    if found:
        return found[0].failure
    if timed_out:
        return STARTUP_TIMEOUT
    if _match(lines, include_generic=True):
        return INVALID_CONFIG
    if returncode == 2:  # argparse's exit status
        return INVALID_CONFIG
    return CRASHED


def classify_runtime_failure(returncode: int | None, log_tail: Sequence[str]) -> str:
    """The failure class of a server that died after it became healthy: always ``crashed``.

    The arguments are taken for symmetry and future use; the *reason* (e.g. a CUDA out-of-memory line under
    load) comes from :func:`extract_reason`.
    """
    del returncode, log_tail
    return CRASHED


def extract_reason(log_tail: Sequence[str], returncode: int | None = None) -> str:
    """The most telling single line of a log tail, cleaned, for the trial's message.

    Preference: the line of the deciding :data:`RULES` entry; else the last exception line that is not mere
    noise ("Engine core initialization failed", "Traceback ..."); else the last noise exception line; else
    the last non-empty line; else a sentence about ``returncode``. At most :data:`MAX_REASON_CHARS` long.
    """
    lines = _lines(log_tail)
    found = _match(lines, include_generic=True)
    reason: str | None = found[1] if found else None
    if reason is None:
        exceptions = [ln for ln in lines if _EXCEPTION_LINE.search(ln)]
        telling = [ln for ln in exceptions if not _NOISE.search(ln)]
        if telling:
            reason = telling[-1]
        elif exceptions:
            reason = exceptions[-1]
        elif lines:
            reason = lines[-1]
    if reason is None:
        reason = _describe_returncode(returncode)
    reason = _PYDANTIC_TYPE.sub("", reason)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return reason


def last_line(log_tail: Sequence[str]) -> str:
    """The last non-blank line of a log tail, cleaned (what the server was doing when the deadline passed)."""
    lines = _lines(log_tail)
    return lines[-1][:MAX_REASON_CHARS] if lines else "no log output"


def _describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "no log output"
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}, no log output"
    return f"exited with status {returncode}, no log output"
