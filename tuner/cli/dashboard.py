"""``tuner dashboard [STUDY.yaml] [--storage URL] [--host 127.0.0.1] [--port 8080] [--token T | --no-auth]
[--interval 2]``: a read-only web view of the studies in a storage (:mod:`tuner.web`).

The storage is the study file's (or ``--storage``), opened read-only (:mod:`tuner.web.readonly`); with a
study file its study must exist. It binds 127.0.0.1 unless ``--host`` says otherwise; any other address is
announced loudly and needs ``--token`` (or ``TUNER_DASHBOARD_TOKEN`` in the environment, which keeps it out
of the process list) or an explicit ``--no-auth``. Bad input (no storage, a bad URL, a missing database or
study, a non-loopback host without a decision on access, a port that cannot be bound) is one line and exit
2; the database is never written.
"""

from __future__ import annotations

import argparse
import os

from tuner.cli.common import is_loopback
from tuner.cli.output import Console
from tuner.config.paths import default_storage
from tuner.config.spec import load_spec
from tuner.errors import EXIT_BAD_INPUT, UsageError

TOKEN_ENV = "TUNER_DASHBOARD_TOKEN"


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("study", nargs="?", help="a study file: its storage, and the study it must hold")
    c.add_argument("--storage", help="storage URL (sqlite:///FILE.db or postgresql://...)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8080)
    c.add_argument("--token", help=f"require this bearer token (or set {TOKEN_ENV})")
    c.add_argument("--no-auth", action="store_true", help="serve another host without a token")
    c.add_argument("--interval", type=float, default=2.0, help="seconds between two reads of the storage")


def handle(args: argparse.Namespace, console: Console) -> int:
    from aiohttp import web

    from tuner.web.app import make_app
    from tuner.web.readonly import open_readonly

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.token is not None and not args.token.strip():
        raise UsageError("--token is empty")
    if token and args.no_auth:
        raise UsageError("--token and --no-auth contradict each other")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port")
    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval}: must be positive")
    from tuner.search.workers import heartbeat_grace_s

    heartbeat_grace_s()  # a bad TUNER_HEARTBEAT_GRACE_S: one line now, not an error page at each refresh
    loopback = is_loopback(args.host)
    if not loopback and token is None and not args.no_auth:
        raise UsageError(
            f"--host {args.host} serves other machines: give --token (or {TOKEN_ENV}) or say --no-auth"
        )
    spec = load_spec(args.study) if args.study else None
    url = args.storage or (default_storage(spec) if spec else None)
    if url is None:
        console.abort("dashboard: give a study file or --storage URL", EXIT_BAD_INPUT)
    storage = open_readonly(url)
    if spec is not None and spec.name not in {s.study_name for s in storage.get_all_studies()}:
        raise UsageError(f"no study named {spec.name!r} in {url}")
    if not loopback:
        console.warn(
            f"the dashboard listens on {args.host}:{args.port}, reachable from other machines "
            + ("(token required)" if token else "WITHOUT A TOKEN: anyone who reaches it reads every study")
        )
    app = make_app(storage, url=url, interval_s=args.interval, token=token, warm=True)
    where = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/"
    console.info(
        f"dashboard on {where}" + (" (open it with ?token=...)" if token else "") + "; Ctrl-C stops it"
    )
    try:
        web.run_app(app, host=args.host, port=args.port, print=None, handle_signals=True)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0
