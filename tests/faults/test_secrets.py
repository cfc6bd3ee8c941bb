"""Secrets and exposure.

An API key or hub token given through the environment (tuner's own, or the study's ``server.env``) or as
``server.args.api-key`` never lands in the study database, the files tuner writes (server logs included,
even when the server prints its environment), the stored argv or anything tuner prints — while the server
still gets the key (the fake then demands ``Authorization: Bearer <key>``, which the load sends).

Servers bind 127.0.0.1 unless the study says otherwise; another address is announced with a warning line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import FakeStudy
from tuner.cli.main import main
from tuner.config.redact import MASK, Redactor, is_secret_env, is_secret_flag, secret_flag_env
from tuner.server.env import api_key, auth_headers

pytestmark = pytest.mark.timeout(180)

HF = "hf_SECRETenvtoken0123456789"  # HF_TOKEN in tuner's environment
OPENAI = "sk-SECRETopenai0123456789"  # OPENAI_API_KEY in tuner's environment
HUB = "hf_SECRETserverenv987654321"  # HUGGING_FACE_HUB_TOKEN in the study's server.env
KEY = "SECRET-api-key-abcdef123456"  # server.args.api-key
SECRETS = (HF, OPENAI, HUB, KEY)


@pytest.mark.slow
def test_secrets_are_never_stored_logged_or_printed(
    fake_study: Callable[..., FakeStudy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI)
    # trial 1's server fails at start with the token in its last words
    monkeypatch.setenv("FAKE_VLLM_FAULT_ON", "2")
    monkeypatch.setenv("FAKE_VLLM_EXIT_AT_START", f"401 Client Error for token {HF}: Unauthorized")
    fs = fake_study(
        n_trials=3,
        server={
            "args": {"api-key": KEY},
            "env": {
                "HUGGING_FACE_HUB_TOKEN": HUB,
                # a server that prints its environment into the log tuner keeps
                "FAKE_VLLM_LOG_ENV": "HF_TOKEN,HUGGING_FACE_HUB_TOKEN,VLLM_API_KEY,OPENAI_API_KEY",
            },
        },
    )
    printed = ""
    assert main(["run", str(fs.path)]) == 0
    printed += "".join(capsys.readouterr())
    assert main(["measure", str(fs.path), "--json"]) == 0
    out, err = capsys.readouterr()
    printed += out + err
    measured = json.loads(out)
    for argv in (["status", str(fs.path)], ["pareto", str(fs.path), "--format", "json"]):
        assert main(argv) == 0
    assert main(["best", str(fs.path), "--export", "cmd"]) == 0
    printed += "".join(capsys.readouterr())

    # the server got the key: the fake answers 401 without "Authorization: Bearer <key>"
    trials = fs.trials()
    assert [t.user_attrs["status"] for t in trials] == ["ok", "crashed", "ok"], [
        t.user_attrs["message"] for t in trials
    ]
    assert measured["status"] == "ok"
    for argv in [measured["argv"], *(t.user_attrs["argv"] for t in trials)]:
        assert "--api-key" not in argv and argv
    failed = trials[1].user_attrs
    assert any(f"token {MASK}" in x for x in failed["log_tail"]), failed["log_tail"]
    assert any(f"HF_TOKEN={MASK}" in x for x in failed["log_tail"])
    stored_spec = fs.study().user_attrs["spec"]["server"]
    assert stored_spec["env"]["HUGGING_FACE_HUB_TOKEN"] == MASK and stored_spec["args"]["api-key"] == MASK

    leaks: list[str] = []
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != fs.path]  # the study file is the user's
    assert any(p.suffix == ".log" for p in files) and fs.db in files
    for p in files:
        data = p.read_bytes()
        leaks += [f"{p}: {s}" for s in SECRETS if s.encode() in data]
    leaks += [f"output: {s}" for s in SECRETS if s in printed]
    assert not leaks, leaks
    logs = "".join(p.read_text() for p in files if p.suffix == ".log")
    assert f"VLLM_API_KEY={MASK}" in logs and f"HF_TOKEN={MASK}" in logs  # it did print them
    assert fs.alive() == []


def test_redactor_rules() -> None:
    assert all(
        is_secret_env(n) for n in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY", "MY_PASSWORD")
    )
    assert not any(is_secret_env(n) for n in ("PATH", "TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES"))
    assert is_secret_flag("api-key") and is_secret_flag("--hf-token") and is_secret_flag("--db-password=x")
    assert not any(is_secret_flag(f) for f in ("max-num-batched-tokens", "tokenizer", "ssl-keyfile"))
    r = Redactor([KEY, "abc"])  # too short to be a secret: left alone
    assert r.argv(["x", "--api-key", "k1", "--hf-token=t", f"--tag={KEY}"]) == [
        "x", "--api-key", MASK, f"--hf-token={MASK}", f"--tag={MASK}",
    ]  # fmt: skip
    assert r.obj({"a": [f"say {KEY}!", 1, None], KEY: "abc"}) == {"a": [f"say {MASK}!", 1, None], MASK: "abc"}
    assert r.text("postgresql://tuner:pw1234@db:5432/x") == f"postgresql://tuner:{MASK}@db:5432/x"


def test_the_api_key_comes_from_the_flag_then_the_servers_environment() -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert auth_headers({"api-key": KEY}, {"VLLM_API_KEY": "other-key"}, {}) == bearer
    assert auth_headers({}, {"VLLM_API_KEY": KEY}, {"VLLM_API_KEY": "other-key"}) == bearer
    assert auth_headers({}, {}, {"VLLM_API_KEY": KEY}) == bearer
    assert auth_headers({"api-key": None}, {}, {}) == {} and api_key({}, {"VLLM_API_KEY": ""}, {}) is None
    # the redactor knows the same flag and variable
    assert secret_flag_env({"api-key": KEY}) == {"VLLM_API_KEY": KEY} and is_secret_env("VLLM_API_KEY")


@pytest.mark.parametrize(
    ("host", "env", "warning"),
    [
        (None, {}, None),
        ("0.0.0.0", {}, "server.host is 0.0.0.0: every vLLM server this study starts listens on 0.0.0.0"),
        ("0.0.0.0", {"VLLM_API_KEY": KEY}, "reachable from other machines"),
    ],
    ids=["default-loopback", "all-interfaces", "all-interfaces-with-key"],
)
def test_servers_bind_loopback_unless_told_and_say_so(
    fake_study: Callable[..., FakeStudy],
    capsys: pytest.CaptureFixture[str],
    host: str | None,
    env: dict[str, str],
    warning: str | None,
) -> None:
    server: dict[str, object] = {"env": env}
    if host is not None:
        server["host"] = host
    fs = fake_study(server=server)
    assert main(["measure", str(fs.path), "--json"]) == 0
    out, err = capsys.readouterr()
    argv = json.loads(out)["argv"]
    assert argv[argv.index("--host") + 1] == (host or "127.0.0.1")
    launched = fs.wait_event(None, event="launched")
    assert launched["argv"][launched["argv"].index("--host") + 1] == (host or "127.0.0.1")
    warnings = [line for line in err.splitlines() if line.startswith("tuner: warning: server.host")]
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0], err
        assert ("no API key" in warnings[0]) == (not env)
    assert KEY not in out + err
