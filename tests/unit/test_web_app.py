"""The dashboard's routes through aiohttp's test client: every page, the access rule, bad input, one read
of the storage per interval however many pages ask, and a database byte-identical after browsing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import optuna
import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_web_views import SECRET, make_db

from tuner.cli.main import main
from tuner.errors import UsageError
from tuner.web.app import COOKIE, SNAPSHOTS, make_app
from tuner.web.readonly import open_readonly

TOKEN = "s3cret-dashboard-token"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("webapp")
    url, _ = make_db(folder)
    return url, folder / "web.db"


@pytest.fixture
async def client(db: tuple[str, Path]) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = make_app(open_readonly(db[0]), url=db[0], environ={"HF_TOKEN": SECRET})
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_every_route(client: TestClient) -> None:  # type: ignore[type-arg]
    for path, marker in (
        ("/", 'id="studies"'),
        ("/study/web", 'id="trials" data-count="7"'),
        ("/study/web/trial/1", 'id="steps"'),
        ("/study/web/trial/2", "oom here"),
        ("/study/web/trial/6", "last heartbeat"),
    ):
        resp = await client.get(path)
        text = await resp.text()
        assert resp.status == 200, path
        assert marker in text, path
        assert SECRET not in text, path
        assert resp.headers["X-Frame-Options"] == "DENY"
    resp = await client.get("/api/study/web/revision")
    state = await resp.json()
    assert state["revision"].startswith("7-") and "6" in state["heartbeats"]


async def test_static_files_come_from_the_package_compressed(client: TestClient) -> None:  # type: ignore[type-arg]
    for name, kind in (
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("plotly.min.js", "text/javascript"),
    ):
        resp = await client.get(f"/static/{name}", headers={"Accept-Encoding": "gzip"})
        assert resp.status == 200 and resp.content_type == kind
        assert resp.headers["Content-Encoding"] == "gzip"
        assert len(await resp.read()) > 100
    assert (await client.get("/static/../app.py")).status == 404


async def test_missing_study_trial_and_bad_method(client: TestClient) -> None:  # type: ignore[type-arg]
    for path in ("/study/nope", "/study/web/trial/99", "/study/web/trial/x", "/api/study/nope/revision"):
        resp = await client.get(path)
        assert resp.status == 404, path
    resp = await client.get("/study/nope")
    assert "no study named &#x27;nope&#x27;" in await resp.text()
    assert (await client.post("/study/web")).status == 405


async def test_token_bearer_query_then_cookie(db: tuple[str, Path]) -> None:
    app = make_app(open_readonly(db[0]), url=db[0], token=TOKEN)
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/study/web")).status == 401
        assert (await c.get("/study/web", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await c.get("/study/web?token=wrong")).status == 401
        assert (await c.get("/study/web", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
        resp = await c.get(f"/study/web?token={TOKEN}", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/study/web"
        cookie = resp.cookies[COOKIE]
        assert TOKEN not in cookie.value and cookie["httponly"]
        assert (await c.get("/study/web")).status == 200  # the cookie now


async def test_one_storage_read_per_interval_however_many_pages(db: tuple[str, Path]) -> None:
    app = make_app(open_readonly(db[0]), url=db[0], interval_s=3600)
    async with TestClient(TestServer(app)) as c:
        pages = await asyncio.gather(*(c.get("/study/web") for _ in range(12)))
        assert all(p.status == 200 for p in pages)
        snaps = app[SNAPSHOTS]
        assert snaps.refreshes == 1
        snaps.interval_s = 0.0  # every answer is now stale: one background read at a time
        await asyncio.gather(*(c.get("/api/study/web/revision") for _ in range(12)))
        await snaps.settled()
        assert 2 <= snaps.refreshes <= 3


async def test_browsing_leaves_the_database_byte_identical(db: tuple[str, Path]) -> None:
    before = hashlib.sha256(db[1].read_bytes()).hexdigest()
    app = make_app(open_readonly(db[0]), url=db[0], interval_s=0.0)
    async with TestClient(TestServer(app)) as c:
        for path in (
            "/",
            "/study/web",
            "/study/web/trial/0",
            "/study/web/trial/6",
            "/api/study/web/revision",
        ):
            assert (await c.get(path)).status == 200
        await app[SNAPSHOTS].settled()
    assert hashlib.sha256(db[1].read_bytes()).hexdigest() == before
    assert not list(db[1].parent.glob("web.db-*"))  # no journal left either


def test_the_storage_refuses_writes(db: tuple[str, Path]) -> None:
    storage = open_readonly(db[0])
    with pytest.raises(optuna.exceptions.StorageInternalError) as e:
        storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "another")
    assert "readonly" in str(e.value.__cause__)


def test_bad_storage_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_text("not a database")
    for url in (
        "nonsense://",
        f"sqlite:///{tmp_path / 'missing.db'}",
        f"sqlite:///{tmp_path / 'junk.db'}",
        f"sqlite:///{tmp_path}",
    ):
        with pytest.raises(UsageError) as e:
            open_readonly(url)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--storage", "sqlite:////nonexistent/x.db"], "no study database"),
        (["--storage", "nonsense://"], "not supported"),
        (["--host", "0.0.0.0", "--storage", "sqlite:////x.db"], "--token"),
        (["--token", "a", "--no-auth", "--storage", "sqlite:////x.db"], "contradict"),
        ([], "give a study file or --storage"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err


def test_cli_missing_study_exits_2(
    db: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "other.yaml"
    spec.write_text(
        "name: other\nmodel: ./m\nsearch: {max-num-seqs: {low: 2, high: 8}}\n"
        "workload: {input_tokens: 8, output_tokens: 4, requests: 4}\nslo: {ttft_p99_ms: 100}\n"
    )
    assert main(["dashboard", str(spec), "--storage", db[0]]) == 2
    assert "no study named 'other'" in capsys.readouterr().err
