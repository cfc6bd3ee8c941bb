"""The chosen port is taken by another program between choice and start: the trial retries on another port.

The port picker given to the real trial runner chooses a free port, then a real socket takes it at once
(bound only — so only the server's own bind finds out, "Address already in use" — or listening — so tuner's
pre-start probe finds out); the next pick is left alone. The trial must measure on another port.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import FakeStudy
from tuner.config.spec import load_spec
from tuner.measure.trial import run_trial
from tuner.server.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def squatter() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


@pytest.mark.parametrize("how", ["bound", "listening"])
def test_port_taken_between_choice_and_start_is_retried(
    fake_study: Callable[..., FakeStudy], tmp_path: Path, squatter: list[socket.socket], how: str
) -> None:
    fs = fake_study()
    taken: list[int] = []

    def picker(host: str) -> int:
        port = free_port(host)
        if not taken:  # the first choice is stolen right after it was made
            s = socket.socket()
            s.bind((host, port))
            if how == "listening":
                s.listen()
            squatter.append(s)
            taken.append(port)
        return port

    result = run_trial(
        load_spec(fs.path), {}, log_dir=tmp_path / "t", runtime_dir=tmp_path / "rt", port_picker=picker
    )
    assert result.status == "ok", (result.message, result.log_tail)
    port = int(result.argv[result.argv.index("--port") + 1])
    assert taken and port != taken[0]
    launched = [e for e in fs.events() if e["event"] == "launched"]
    log = Path(result.log_path or "").read_text()
    if how == "bound":  # the first server started, failed to bind, and the log keeps both attempts
        assert len(launched) == 2 and f"--port {taken[0]}" in " ".join(launched[0]["argv"])
        assert "address already in use" in log.lower() and "Started server process" in log
    else:  # tuner saw the port answer and never launched on it
        assert len(launched) == 1
    assert fs.alive() == []
