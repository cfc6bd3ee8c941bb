"""Start, watch and stop one vLLM server process (group). Synchronous, stdlib only (pynvml if present).

Lifecycle of :class:`VllmServer` (a context manager)::

    with VllmServer(argv, host=..., port=..., log_path=..., runtime_dir=...) as server:
        ...            # healthy: GET /health answered 200; server.url, server.startup_s
        server.check_alive()   # raises ServerCrashed if it died under load
    # stopped: the whole process group is gone, the port is free, GPU memory is back near its level

Contracts:

* argv is executed directly (never through a shell), in a **new session** (its own process group, whose id
  is the server's pid), with ``os.environ`` updated by ``env``, stdin from /dev/null and stdout+stderr
  appended to ``log_path``.
* On Linux the child first runs a tiny Python shim that sets ``PR_SET_PDEATHSIG(SIGKILL)`` and then
  ``exec``\\ s argv (same pid), so a ``kill -9`` of tuner takes the server's API process down. This avoids
  ``preexec_fn`` (unsafe when the parent has threads). Caveat: the death signal fires when the *thread*
  that started the server exits, so start servers from a long-lived thread (the main thread). The
  engine-core children of the server are not covered: the pidfile sweep (:func:`stop_leftover_servers`) is
  the backstop for them.
* Startup: the port must not already accept connections (else ``port_in_use`` at once); then ``/health`` is
  polled every ``poll_interval_s`` while the process is watched. An exit raises
  :class:`~tuner.errors.ServerStartError` with the class from
  :func:`tuner.server.failures.classify_start_failure`; the deadline raises it with ``startup_timeout`` (or a
  class the log proves). In both cases the group has been stopped before the error is raised.
* Stop (idempotent): SIGTERM to the group, wait ``stop_timeout_s`` for every member to go, SIGKILL the
  group; then wait until the port refuses connections and, when a GPU probe answers, until GPU memory
  used is back within ``gpu_tolerance_bytes`` of its level before start. The pidfile is removed last.
* A pidfile ``vllm-<pid>.json`` in ``runtime_dir`` records pid, pgid, argv, start time, host, port and the
  owner (tuner's pid and process start time). :func:`stop_leftover_servers` kills the groups whose owner
  is dead, after checking that the pid still runs the recorded process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tuner.errors import ServerCrashed, ServerStartError
from tuner.server.failures import (
    PORT_IN_USE,
    STARTUP_TIMEOUT,
    classify_runtime_failure,
    classify_start_failure,
    extract_reason,
    last_line,
)

#: a GPU probe: memory used per device in bytes, or None when there is no GPU (or no NVML)
GpuProbe = Callable[[], Sequence[int] | None]

#: lines of log the classifier reads: vLLM's root cause sits 100+ lines above the end (CPU, one worker);
#: with tensor parallelism every worker prints its own traceback
CLASSIFY_LINES = 3000
#: lines of log stored with a failure
TAIL_LINES = 40
PIDFILE_PREFIX = "vllm-"

_LINUX = sys.platform.startswith("linux")
_PR_SET_PDEATHSIG = 1

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


# ---------------------------------------------------------------------------------------------- ports


def _connect_host(host: str) -> str:
    """Where to connect for a server bound to ``host`` (a wildcard address means this machine)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS's choice). Racy by nature: see retry."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    target = _connect_host(host)
    with socket.socket(_family(target), socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect((target, port))
        except OSError:
            return False
        return True


def wait_port_free(host: str, port: int, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Wait until ``host:port`` refuses connections; False if it still accepts after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while port_accepts(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def http_status(host: str, port: int, path: str = "/health", timeout_s: float = 2.0) -> int | None:
    """The status of ``GET path`` (no proxy, no redirects), or None when the server does not answer."""
    conn = http.client.HTTPConnection(_connect_host(host), port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` from field 3 (state) on, or None when the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[-1].split()


def process_starttime(pid: int) -> int | None:
    """The process's start time (clock ticks since boot; Linux), or None. pid + starttime is unique."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_cmdline(pid: int) -> list[str] | None:
    """The argv a process runs (``/proc/<pid>/cmdline``), or None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def pid_alive(pid: int) -> bool:
    """True when ``pid`` names a process that is not a zombie."""
    if _LINUX:
        fields = _proc_stat(pid)
        return fields is not None and fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid``."""
    if not _LINUX:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_group(
    pgid: int,
    stop_timeout_s: float,
    *,
    leader: subprocess.Popen[bytes] | None = None,
    kill_timeout_s: float = 10.0,
    poll_s: float = 0.05,
) -> bool:
    """SIGTERM the group, wait ``stop_timeout_s`` for all members to go, then SIGKILL it.

    ``leader`` (our own child) is reaped on the way. Signals are sent only while the group has live
    members, so a recycled group id is never signalled. Returns True when SIGKILL was needed.
    """

    def gone() -> bool:
        if leader is not None:
            leader.poll()
        return not process_group_members(pgid)

    if gone():
        return False
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout_s
    while time.monotonic() < deadline:
        if gone():
            return False
        time.sleep(poll_s)
    if not gone():
        _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + kill_timeout_s
    while not gone() and time.monotonic() < deadline:
        time.sleep(poll_s)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=max(0.0, deadline - time.monotonic()))
    return True


# ------------------------------------------------------------------------------------------------ gpu

_nvml_state: dict[str, Any] = {}


def gpu_memory_used() -> list[int] | None:
    """Bytes of memory used on each GPU via NVML, or None when pynvml is missing or cannot initialise."""
    if _nvml_state.get("failed"):
        return None
    try:
        import pynvml

        if not _nvml_state.get("ready"):
            pynvml.nvmlInit()
            _nvml_state["ready"] = True
        count = pynvml.nvmlDeviceGetCount()
        return [
            int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
            for i in range(count)
        ]
    except Exception:
        _nvml_state["failed"] = True
        return None


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


# -------------------------------------------------------------------------------------------- pidfiles


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _owner_alive(record: Mapping[str, Any]) -> bool:
    owner = record.get("owner_pid")
    if not isinstance(owner, int):
        return False
    if not pid_alive(owner):
        return False
    recorded = record.get("owner_starttime")
    if isinstance(recorded, int):
        return process_starttime(owner) == recorded  # else: the owner's pid was recycled
    return True


def _runs_recorded_process(pid: int, record: Mapping[str, Any]) -> bool:
    """Does ``pid`` still run the recorded server (not a recycled pid)?

    Both must hold: ``/proc/<pid>/cmdline`` equals the recorded argv (vLLM's API server keeps its argv; only
    its worker processes rename themselves), and the process start time equals the recorded one when both
    are known (this also catches a recycled pid that happens to run the same command).
    """
    if process_cmdline(pid) != list(record.get("argv") or []):
        return False
    recorded_start = record.get("starttime")
    start = process_starttime(pid)
    return not (isinstance(recorded_start, int) and start is not None and start != recorded_start)


def read_pidfiles(runtime_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """The parseable pidfiles in ``runtime_dir`` with their records (unreadable ones are skipped)."""
    out: list[tuple[Path, dict[str, Any]]] = []
    folder = Path(runtime_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob(f"{PIDFILE_PREFIX}*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("pgid"), int)
            and isinstance(record.get("pid"), int)
        ):
            out.append((path, record))
    return out


def stop_leftover_servers(runtime_dir: str | Path, *, stop_timeout_s: float = 10.0) -> list[int]:
    """Kill the server groups left behind by dead tuner processes; return the process group ids killed.

    For each pidfile in ``runtime_dir`` whose owner (tuner pid + start time) is dead:

    * the recorded pid is alive and still runs the recorded process (``/proc`` cmdline == argv, and the same
      start time): its group is terminated (SIGTERM, then SIGKILL after ``stop_timeout_s``);
    * the recorded pid is alive but runs something else (a recycled pid): nothing is signalled;
    * the recorded pid is gone but its group still has members (engine-core children): the group is
      terminated; the kernel does not reuse a pid while it is still some group's id, so these are ours.

    The pidfile is removed in every case. Pidfiles of live owners are left alone.
    """
    killed: list[int] = []
    for path, record in read_pidfiles(runtime_dir):
        if _owner_alive(record):
            continue
        pid, pgid = int(record["pid"]), int(record["pgid"])
        # a dead leader with live members: the group id is still held, so the members are ours
        ours = _runs_recorded_process(pid, record) if pid_alive(pid) else bool(process_group_members(pgid))
        if ours and process_group_members(pgid):
            terminate_group(pgid, stop_timeout_s)
            killed.append(pgid)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return killed


# --------------------------------------------------------------------------------------------- server


class VllmServer:
    """One server process group: start, wait for health, watch, stop. See the module docstring.

    ``argv`` must already contain ``--host``/``--port`` matching ``host``/``port`` (see
    :func:`tuner.config.argv.build_plan`). ``env`` is merged over ``os.environ``. ``log_path`` receives stdout and
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
        target = _connect_host(self.host)
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

    def check_alive(self) -> None:
        """Raise :class:`~tuner.errors.ServerCrashed` (``crashed``) with the log tail if the server died."""
        if self._proc is None:
            raise RuntimeError("the server was not started")
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

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
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
        env = {**os.environ, **self.env}
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
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        pid = self._proc.pid
        record = {
            "pid": pid,
            "pgid": pid,
            "argv": self.argv,
            "started_at": self.started_at,
            "starttime": process_starttime(pid),
            "host": self.host,
            "port": self.port,
            "log_path": str(self.log_path),
            "owner_pid": os.getpid(),
            "owner_starttime": process_starttime(os.getpid()),
        }
        path = self.runtime_dir / f"{PIDFILE_PREFIX}{pid}.json"
        _write_json_atomic(path, record)
        self._pidfile = path

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
            status = http_status(
                self.host, self.port, self.health_path, timeout_s=min(1.0, max(0.1, remaining))
            )
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


#: the name the trial runner uses
start_server = start_server_with_retry


__all__ = [
    "CLASSIFY_LINES",
    "TAIL_LINES",
    "GpuProbe",
    "VllmServer",
    "free_port",
    "gpu_memory_used",
    "http_status",
    "pid_alive",
    "port_accepts",
    "process_cmdline",
    "process_group_members",
    "process_starttime",
    "read_pidfiles",
    "start_server",
    "start_server_with_retry",
    "stop_leftover_servers",
    "terminate_group",
    "wait_gpu_memory_released",
    "wait_port_free",
]
