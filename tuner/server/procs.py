"""Processes by pid and process group, and the pidfiles of the servers tuner started. Stdlib only.

* A process is named by ``pid`` plus its start time (:func:`process_starttime`): a pid alone may have been
  recycled. On Linux everything is read from ``/proc``; elsewhere only ``os.kill(pid, 0)`` answers.
* :func:`terminate_group` stops a whole process group (SIGTERM, then SIGKILL), signalling only while the
  group has live members, so a recycled group id is never signalled.
* A pidfile ``vllm-<pid>.json`` (:func:`write_pidfile`) records a server's pid, pgid, argv, start time, host,
  port and its owner (tuner's pid and process start time). :func:`stop_leftover_servers` kills the groups
  whose owner is dead, after checking that the pid still runs the recorded process. The study loop reads
  the same facts for worker liveness (:func:`pid_alive`, :func:`process_starttime`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PIDFILE_PREFIX = "vllm-"

_LINUX = sys.platform.startswith("linux")


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


# -------------------------------------------------------------------------------------------- pidfiles


def write_pidfile(
    runtime_dir: Path,
    pid: int,
    *,
    argv: Sequence[str],
    started_at: float | None,
    host: str,
    port: int,
    log_path: str,
) -> Path:
    """Record the server ``pid`` (leader of its own group), owned by this process; returns the pidfile."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": pid,
        "pgid": pid,
        "argv": list(argv),
        "started_at": started_at,
        "starttime": process_starttime(pid),
        "host": host,
        "port": port,
        "log_path": log_path,
        "owner_pid": os.getpid(),
        "owner_starttime": process_starttime(os.getpid()),
    }
    path = runtime_dir / f"{PIDFILE_PREFIX}{pid}.json"
    _write_json_atomic(path, record)
    return path


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


def signal_own_servers(runtime_dir: str | Path, sig: int = signal.SIGTERM) -> list[int]:
    """Send ``sig`` to the groups of the servers this process started (its pidfiles in ``runtime_dir``)
    that still have members; returns their group ids. How parallel trials are stopped at once on Ctrl-C:
    each trial then sees its server gone and returns."""
    sent: list[int] = []
    for _path, record in read_pidfiles(runtime_dir):
        pgid = int(record["pgid"])
        if record.get("owner_pid") == os.getpid() and process_group_members(pgid):
            _signal_group(pgid, sig)
            sent.append(pgid)
    return sent


__all__ = [
    "PIDFILE_PREFIX",
    "pid_alive",
    "process_cmdline",
    "process_group_members",
    "process_starttime",
    "read_pidfiles",
    "signal_own_servers",
    "stop_leftover_servers",
    "terminate_group",
    "write_pidfile",
]
