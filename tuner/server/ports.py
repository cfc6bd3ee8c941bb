"""TCP ports and HTTP status of a server on this machine. Stdlib only, synchronous.

A free port is the OS's choice a moment ago (racy by nature: :func:`tuner.server.process.start_server_with_retry`
retries on ``port_in_use``); a wildcard bind address means "this machine" to a client (:func:`connect_host`).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Mapping


def connect_host(host: str) -> str:
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
    target = connect_host(host)
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


def http_status(
    host: str,
    port: int,
    path: str = "/health",
    timeout_s: float = 2.0,
    headers: Mapping[str, str] | None = None,
) -> int | None:
    """The status of ``GET path`` (no proxy, no redirects), or None when the server does not answer."""
    conn = http.client.HTTPConnection(connect_host(host), port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


__all__ = ["connect_host", "free_port", "http_status", "port_accepts", "wait_port_free"]
