"""The dashboard's aiohttp application: routes, the access rule, static files. Reads only.

Routes (GET only; every other method is 405)::

    /                                   all studies
    /study/{name}                       one study (live)
    /study/{name}/trial/{number}        one trial (live)
    /api/study/{name}/revision          {"revision", "read_at", "heartbeats"}: what the pages poll
    /static/{dashboard.js,dashboard.css,plotly.min.js}

Access (:func:`make_app` ``token``): with no token every request is served (the command binds 127.0.0.1
unless told otherwise, see :mod:`tuner.cli.dashboard`). With a token a request is served when it carries
``Authorization: Bearer <token>``, or the session cookie, or ``?token=<token>`` (the browser's first
visit: answered by a redirect to the same address without the token, setting the cookie: HttpOnly,
SameSite=Strict, its value a keyed digest of the token rather than the token); each is compared in constant
time (:func:`hmac.compare_digest`). Anything else is 401. Every answer carries headers that keep the page
out of frames, its address out of Referer headers and scripts to the dashboard's own.

Errors: an unknown study or trial is a 404 page naming it; a storage that fails while the dashboard runs is
a 503 page with the one-line reason (the dashboard keeps running and reads again on the next request).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import optuna
from aiohttp import web
from aiohttp.typedefs import Middleware

from tuner.config.redact import Redactor
from tuner.errors import TunerError
from tuner.web import html, views
from tuner.web.cache import DEFAULT_INTERVAL_S, Snapshots, StudyData

COOKIE = "tuner_dashboard"
SNAPSHOTS: web.AppKey[Snapshots] = web.AppKey("snapshots", Snapshots)
SETTINGS: web.AppKey[dict[str, Any]] = web.AppKey("settings", dict)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'",
}
_TYPES = {".js": "text/javascript", ".css": "text/css"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    storage: optuna.storages.BaseStorage,
    *,
    url: str = "",
    interval_s: float = DEFAULT_INTERVAL_S,
    token: str | None = None,
    environ: Mapping[str, str] | None = None,
    warm: bool = False,
) -> web.Application:
    """The application over ``storage`` (opened by :func:`tuner.web.readonly.open_readonly`); ``url`` is
    shown (password masked) on every page. ``warm``: read every study in the background as it starts
    (:meth:`Snapshots.warm`), so that the first page need not wait for it."""
    app = web.Application(middlewares=[_headers, _access(token)])
    snapshots = Snapshots(storage, url=url, interval_s=interval_s)
    app[SNAPSHOTS] = snapshots
    env = dict(os.environ if environ is None else environ)
    app[SETTINGS] = {"environ": env, "storage": Redactor.from_sources(env).text(url), "static": _static()}
    if warm:
        app.cleanup_ctx.append(_warming)
    app.router.add_get("/", _index)
    app.router.add_get("/study/{name}", _study)
    app.router.add_get("/study/{name}/trial/{number}", _trial)
    app.router.add_get("/api/study/{name}/revision", _revision)
    app.router.add_get("/static/{file}", _static_file)
    return app


async def _warming(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[SNAPSHOTS].warm())
    yield
    task.cancel()


def _static() -> dict[str, tuple[bytes, bytes, str]]:
    """Each static file: its bytes, gzip-compressed once, and its type."""
    from plotly.offline import get_plotlyjs

    folder = resources.files("tuner.web") / "static"
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith((".js", ".css"))}
    files["plotly.min.js"] = get_plotlyjs().encode()
    return {
        name: (body, gzip.compress(body, 6), _TYPES[os.path.splitext(name)[1]])
        for name, body in files.items()
    }


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "text/html":
            raise
        resp = _page(request, e.status, e.reason, e.text or e.reason)
    except TunerError as e:  # the storage failed: say so, read again on the next request
        resp = _page(request, 503, "storage unavailable", str(e))
    for k, v in HEADERS.items():
        resp.headers.setdefault(k, v)
    return resp


def _access(token: str | None) -> Middleware:
    key = secrets.token_bytes(32)
    session = hmac.new(key, (token or "").encode(), hashlib.sha256).hexdigest()

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None:
            return await handler(request)
        given = request.query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            target = request.rel_url.with_query({k: v for k, v in request.query.items() if k != "token"})
            found = web.HTTPFound(str(target))
            found.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/")
            raise found
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].encode(), token.encode()):
            return await handler(request)
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), session.encode()):
            return await handler(request)
        resp = _page(request, 401, "token needed", "this dashboard needs its token: open it with ?token=...")
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    return access


def _page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    storage = request.app[SETTINGS]["storage"]
    body = html.page(title, html.error_main(status, message), storage=storage)
    return web.Response(text=body, status=status, content_type="text/html")


def _html(request: web.Request, title: str, main: str, **live: Any) -> web.Response:
    failure = request.app[SNAPSHOTS].failure
    if failure:
        main = html.failure_note(failure) + main
    body = html.page(title, main, storage=request.app[SETTINGS]["storage"], **live)
    resp = web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})
    resp.enable_compression()
    return resp


async def _index(request: web.Request) -> web.Response:
    snaps = request.app[SNAPSHOTS]
    env = request.app[SETTINGS]["environ"]
    rows = []
    for name in await snaps.names():
        d = await snaps.study(name)
        if d is not None:
            rows.append(views.overview(d, views.redactor(d, env)))
    return _html(request, "tuner: studies", html.index_page(rows, time.time()))


async def _study_data(request: web.Request) -> StudyData:
    name = request.match_info["name"]
    d = await request.app[SNAPSHOTS].study(name)
    if d is None:
        raise web.HTTPNotFound(text=f"no study named {name!r} in this storage")
    return d


def _live(request: web.Request, d: StudyData) -> dict[str, Any]:
    return {
        "live": f"/api/study/{html.study_url(d.name).removeprefix('/study/')}/revision",
        "revision": d.revision,
        "interval_ms": int(request.app[SNAPSHOTS].interval_s * 1000),
    }


async def _study(request: web.Request) -> web.Response:
    d = await _study_data(request)
    v = views.study_view(d, views.redactor(d, request.app[SETTINGS]["environ"]))
    return _html(request, f"tuner: {d.name}", html.study_main(v, time.time()), plot=True, **_live(request, d))


async def _trial(request: web.Request) -> web.Response:
    d = await _study_data(request)
    raw = request.match_info["number"]
    v = (
        views.trial_view(d, int(raw), views.redactor(d, request.app[SETTINGS]["environ"]))
        if raw.isdigit()
        else None
    )
    if v is None:
        raise web.HTTPNotFound(text=f"study {d.name!r} has no trial {raw}")
    return _html(
        request, f"tuner: {d.name} trial {raw}", html.trial_main(v, time.time()), **_live(request, d)
    )


async def _revision(request: web.Request) -> web.Response:
    d = await _study_data(request)
    body = {
        "revision": d.revision,
        "read_at": d.read_at,
        "heartbeats": {str(k): v for k, v in d.heartbeats.items()},
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def _static_file(request: web.Request) -> web.Response:
    found = request.app[SETTINGS]["static"].get(request.match_info["file"])
    if found is None:
        raise web.HTTPNotFound(text="no such file")
    raw, packed, kind = found
    headers = {"Cache-Control": "max-age=86400", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=packed, content_type=kind, headers=headers)
    return web.Response(body=raw, content_type=kind, headers=headers)
