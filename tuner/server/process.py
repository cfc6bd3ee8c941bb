"""Start, watch and stop one vLLM server process (group). Synchronous, stdlib only (NVML through telemetry).

Lifecycle of :class:`VllmServer` (a context manager)::

    with VllmServer(argv, host=..., port=..., log_path=..., runtime_dir=...) as server:
        ...            # healthy: GET /health answered 200; server.url, server.startup_s
        server.check_alive()   # raises ServerCrashed if it died (or stopped answering /health) under load
    # stopped: the whole process group is gone, the port is free, GPU memory is back near its level

Contracts:

* argv is executed directly (never through a shell), in a **new session** (its own process group, whose id
  is the server's pid), with the environment :func:`tuner.server.env.server_env` makes of ``env``, stdin
  from /dev/null and stdout+stderr appended to ``log_path``. Its ``/health`` calls carry the API key the
  same way the load does (:func:`tuner.server.env.auth_headers`).
* On Linux the child first runs a tiny Python shim that sets ``PR_SET_PDEATHSIG(SIGKILL)`` and then
  ``exec``\\ s argv (same pid), so a ``kill -9`` of tuner takes the server's API process down. This avoids
  ``preexec_fn`` (unsafe when the parent has threads). Caveat: the death signal fires when the *thread*
  that started the server exits, so start servers from a long-lived thread (the main thread). The
  engine-core children of the server are not covered: the pidfile sweep
  (:func:`tuner.server.procs.stop_leftover_servers`) is the backstop for them.
* Startup: the port must not already accept connections (else ``port_in_use`` at once); then ``/health`` is
  polled every ``poll_interval_s`` while the process is watched. An exit raises
  :class:`~tuner.errors.ServerStartError` with the class from
  :func:`tuner.server.failures.classify_start_failure`; the deadline raises it with ``startup_timeout`` (or a
  class the log proves). In both cases the group has been stopped before the error is raised.
* Under load: :meth:`VllmServer.check_alive` is the one test of a dead server: it exited, or it runs but no
  longer answers ``/health`` 200 (vLLM's API process answers 503 for a moment after its engine died, then
  exits; it gets ``exit_grace_s`` to do so and is stopped after).
* Stop (idempotent): SIGTERM to the group, wait ``stop_timeout_s`` for every member to go, SIGKILL the
  group; then wait until the port refuses connections and, when a GPU probe answers, until GPU memory
  used is back within ``gpu_tolerance_bytes`` of its level before start. The pidfile
  (:func:`tuner.server.procs.write_pidfile`) is removed last.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.errors import ServerCrashed, ServerStartError
from tuner.server.env import auth_headers, server_env
from tuner.server.failures import (
    PORT_IN_USE,
    STARTUP_TIMEOUT,
    classify_runtime_failure,
    classify_start_failure,
    extract_reason,
    last_line,
)
from tuner.server.ports import connect_host, free_port, http_status, port_accepts, wait_port_free
from tuner.server.procs import terminate_group, write_pidfile

#: a GPU probe: memory used per device in bytes, or None when there is no GPU (or no NVML)
GpuProbe = Callable[[], Sequence[int] | None]

#: lines of log the classifier reads: vLLM's root cause sits 100+ lines above the end (CPU, one worker);
#: with tensor parallelism every worker prints its own traceback
CLASSIFY_LINES = 3000
#: lines of log stored with a failure
TAIL_LINES = 40

_LINUX = sys.platform.startswith("linux")

#: run as ``python -I -S -c SHIM PARENT_PID ARGV...``: arm the parent-death signal, then become argv
_PDEATHSIG_SHIM = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    sys.stderr.write("tuner: cannot start %r: %s\\n" % (sys.argv[2], e))
    sys.stderr.flush()
    os._exit(127)
"""


# ------------------------------------------------------------------------------------------------ gpu


def gpu_memory_used() -> list[int] | None:
    """The default :data:`GpuProbe`: bytes used on every GPU, read through the one NVML probe
    (:func:`tuner.measure.telemetry.nvml.gpu_memory_used_mib`); None without NVML."""
    from tuner.measure.telemetry.nvml import gpu_memory_used_mib

    used = gpu_memory_used_mib(visible_devices="all")
    return None if used is None else [mib * 2**20 for mib in used]


def wait_gpu_memory_released(
    baseline: Sequence[int] | None,
    *,
    probe: GpuProbe = gpu_memory_used,
    timeout_s: float = 60.0,
    tolerance_bytes: int = 512 * 2**20,
    poll_s: float = 0.5,
) -> bool:
    """Wait until every GPU uses at most ``baseline + tolerance_bytes``. True when it did (or no GPU).

    ``baseline`` is the probe's answer before the server started; None (no GPU) returns True at once, as
    does a probe that stops answering or a device count that changed.
    """
    if baseline is None:
        return True
    deadline = time.monotonic() + timeout_s
    while True:
        now = probe()
        if now is None or len(now) != len(baseline):
            return True
        if all(used <= base + tolerance_bytes for used, base in zip(now, baseline, strict=True)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------- server


class VllmServer:
    """One server process group: start, wait for health, watch, stop. See the module docstring.

    ``argv`` must already contain ``--host``/``--port`` matching ``host``/``port`` (see
    :func:`tuner.config.argv.build_plan`). ``env`` is merged over ``os.environ`` (:func:`server_env`). ``log_path`` receives stdout and
    stderr (truncated at start unless ``append_log``). ``runtime_dir`` (optional) receives the pidfile.
    ``gpu_probe`` is called before start and after stop (see :func:`wait_gpu_memory_released`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int,
        log_path: str | Path,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        startup_timeout_s: float = 600.0,
        stop_timeout_s: float = 30.0,
        runtime_dir: str | Path | None = None,
        poll_interval_s: float = 0.25,
        health_path: str = "/health",
        port_free_timeout_s: float = 30.0,
        gpu_probe: GpuProbe | None = gpu_memory_used,
        gpu_release_timeout_s: float = 60.0,
        gpu_tolerance_bytes: int = 512 * 2**20,
        gpu_poll_s: float = 0.5,
        pdeathsig: bool = True,
        append_log: bool = False,
        exit_grace_s: float = 10.0,
    ) -> None:
        if not argv:
            raise ValueError("argv is empty")
        self.argv = [str(a) for a in argv]
        self.host = host
        self.port = port
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.cwd = cwd
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.runtime_dir = Path(runtime_dir) if runtime_dir is not None else None
        self.poll_interval_s = poll_interval_s
        self.health_path = health_path
        self.port_free_timeout_s = port_free_timeout_s
        self.gpu_probe = gpu_probe
        self.gpu_release_timeout_s = gpu_release_timeout_s
        self.gpu_tolerance_bytes = gpu_tolerance_bytes
        self.gpu_poll_s = gpu_poll_s
        self.pdeathsig = pdeathsig and _LINUX
        self.append_log = append_log
        self.exit_grace_s = exit_grace_s

        #: seconds from launch to the first /health 200 (None until healthy)
        self.startup_s: float | None = None
        #: epoch seconds of the launch
        self.started_at: float | None = None
        #: after stop: whether SIGKILL was needed, the port came free, GPU memory came back
        self.killed = False
        self.port_released: bool | None = None
        self.gpu_released: bool | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._pidfile: Path | None = None
        self._gpu_baseline: Sequence[int] | None = None
        self._stopped = False

    # -- facts

    @property
    def url(self) -> str:
        """``http://host:port`` as a client should reach it (wildcard hosts become loopback)."""
        target = connect_host(self.host)
        return f"http://[{target}]:{self.port}" if ":" in target else f"http://{target}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def pgid(self) -> int | None:
        """The process group id (== pid: the server leads its own session)."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process exited (negative: killed by that signal), else None."""
        return self._proc.poll() if self._proc else None

    @property
    def pidfile(self) -> Path | None:
        return self._pidfile

    def alive(self) -> bool:
        """True while the server process runs."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n: int = TAIL_LINES) -> list[str]:
        """The last ``n`` non-blank lines this start wrote to the log (earlier attempts excluded)."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                budget = max(64 * 1024, n * 400)
                start = max(self._log_offset, size - budget)
                f.seek(start)
                data = f.read()
        except OSError:
            return []
        lines = data.decode("utf-8", errors="replace").splitlines()
        if start > self._log_offset and lines:
            lines = lines[1:]  # the first one is cut
        return [ln.rstrip() for ln in lines if ln.strip()][-n:] if n > 0 else []

    def healthy(self, timeout_s: float = 5.0) -> bool:
        """True while the process runs and ``GET health_path`` answers 200."""
        return self.alive() and self._health(timeout_s) == 200

    def _health(self, timeout_s: float) -> int | None:
        return http_status(self.host, self.port, self.health_path, timeout_s, auth_headers({}, self.env))

    def check_alive(self) -> None:
        """Raise :class:`~tuner.errors.ServerCrashed` (``crashed``) with the log tail if the server died.

        A process that runs but does not answer ``/health`` 200 is given ``exit_grace_s`` to exit (vLLM's
        API process after its engine died) and then stopped: it is dead too.
        """
        if self._proc is None:
            raise RuntimeError("the server was not started")
        if self._proc.poll() is None and not self.healthy():
            deadline = time.monotonic() + self.exit_grace_s
            while self._proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._proc.poll() is None:
                self.stop()
        rc = self._proc.poll()
        if rc is None:
            return
        tail = self.log_tail(CLASSIFY_LINES)
        failure = classify_runtime_failure(rc, tail)
        reason = extract_reason(tail, rc)
        raise ServerCrashed(
            failure, f"{reason} (server exited with status {rc})", tail[-TAIL_LINES:], str(self.log_path)
        )

    # -- lifecycle

    def __enter__(self) -> VllmServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> VllmServer:
        """Launch and wait for ``/health`` 200. Raises ServerStartError (the group already stopped)."""
        if self._proc is not None:
            raise RuntimeError("a VllmServer starts once; make a new one")
        if port_accepts(self.host, self.port):
            raise ServerStartError(
                PORT_IN_USE,
                f"port {self.port} on {self.host} already accepts connections",
                [],
                str(self.log_path),
            )
        if self.gpu_probe is not None:
            self._gpu_baseline = self.gpu_probe()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = server_env(self.env)
        launch = self.argv
        if self.pdeathsig:
            launch = [sys.executable, "-I", "-S", "-c", _PDEATHSIG_SHIM, str(os.getpid()), *self.argv]
        with open(self.log_path, "ab" if self.append_log else "wb") as log:
            self._log_offset = log.tell()
            self.started_at = time.time()
            t0 = time.monotonic()
            self._proc = subprocess.Popen(
                launch,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                close_fds=True,
            )
        try:
            self._write_pidfile()
            self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_pidfile(self) -> None:
        if self.runtime_dir is None or self._proc is None:
            return
        self._pidfile = write_pidfile(
            self.runtime_dir,
            self._proc.pid,
            argv=self.argv,
            started_at=self.started_at,
            host=self.host,
            port=self.port,
            log_path=str(self.log_path),
        )

    def _wait_healthy(self, t0: float) -> None:
        assert self._proc is not None
        deadline = t0 + self.startup_timeout_s
        while True:
            rc = self._proc.poll()
            if rc is not None:
                self._fail(rc, timed_out=False, elapsed=time.monotonic() - t0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(None, timed_out=True, elapsed=time.monotonic() - t0)
            # a short request timeout: a bound-but-busy server must not delay noticing an exit
            status = self._health(timeout_s=min(1.0, max(0.1, remaining)))
            if status == 200 and self._proc.poll() is None:
                self.startup_s = time.monotonic() - t0
                return
            time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def _fail(self, rc: int | None, *, timed_out: bool, elapsed: float) -> None:
        """Stop the group, classify, raise ServerStartError."""
        self.stop()
        tail = self.log_tail(CLASSIFY_LINES)
        failure = classify_start_failure(rc, tail, timed_out=timed_out)
        reason = extract_reason(tail, rc)
        if failure == STARTUP_TIMEOUT:
            message = f"not healthy after {elapsed:.0f} s; last log line: {last_line(tail)}"
        elif timed_out:
            message = f"{reason} (not healthy after {elapsed:.0f} s)"
        else:
            message = f"{reason} (exit status {rc} after {elapsed:.1f} s)"
        raise ServerStartError(failure, message, tail[-TAIL_LINES:], str(self.log_path))

    def stop(self) -> int | None:
        """Stop the whole group (idempotent) and wait for the port and GPU memory. Returns the exit status.

        Never raises for a server that already died; interrupting it (Ctrl-C) leaves the pidfile, so the
        next sweep finishes the job.
        """
        proc = self._proc
        if proc is None or self._stopped:
            return proc.returncode if proc else None
        self.killed = terminate_group(proc.pid, self.stop_timeout_s, leader=proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)
        self.port_released = wait_port_free(self.host, self.port, self.port_free_timeout_s)
        if self.gpu_probe is not None:
            self.gpu_released = wait_gpu_memory_released(
                self._gpu_baseline,
                probe=self.gpu_probe,
                timeout_s=self.gpu_release_timeout_s,
                tolerance_bytes=self.gpu_tolerance_bytes,
                poll_s=self.gpu_poll_s,
            )
        if self._pidfile is not None:
            with contextlib.suppress(FileNotFoundError):
                self._pidfile.unlink()
        self._stopped = True
        return proc.returncode


def start_server_with_retry(
    make_argv: Callable[[int], Sequence[str]],
    *,
    host: str = "127.0.0.1",
    log_path: str | Path,
    attempts: int = 3,
    port_picker: Callable[[str], int] = free_port,
    **server_kwargs: Any,
) -> VllmServer:
    """Start a server on a fresh port; on ``port_in_use`` retry on another one, up to ``attempts`` times.

    ``make_argv(port)`` builds the argv for a port; ``server_kwargs`` go to :class:`VllmServer`. Returns the
    started (healthy) server; use it as a context manager to stop it. Other failures raise at once; the
    last ``port_in_use`` is raised when every attempt lost the race. All attempts share ``log_path``
    (later attempts append, so the log shows each one).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    append = bool(server_kwargs.pop("append_log", False))
    for attempt in range(attempts):
        port = port_picker(host)
        server = VllmServer(
            make_argv(port),
            host=host,
            port=port,
            log_path=log_path,
            append_log=append or attempt > 0,
            **server_kwargs,
        )
        try:
            return server.start()
        except ServerStartError as e:
            if e.failure != PORT_IN_USE or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


__all__ = [
    "CLASSIFY_LINES",
    "TAIL_LINES",
    "GpuProbe",
    "VllmServer",
    "gpu_memory_used",
    "start_server_with_retry",
    "wait_gpu_memory_released",
]
