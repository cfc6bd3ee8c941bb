"""Study files the tests write (YAML under a test's folder), and the parts several of them share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: ``server`` of a study whose trials start the simulator instead of vLLM: its CPU profile, 50 times faster
#: than real time, starting at once
SIM_SERVER: dict[str, Any] = {
    "command": [
        "python",
        "-m",
        "tuner.sim",
        "--sim-hardware",
        "cpu-2core",
        "--sim-time-scale",
        "0.02",
        "--sim-startup-s",
        "0",
    ],
    "args": {"max-model-len": 2048},
    "startup_timeout_s": 60,
}


def write_study_file(folder: Path, doc: Mapping[str, Any]) -> Path:
    """``doc`` written as ``folder/<its name>.yaml``; returns the path."""
    path = folder / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(dict(doc)))
    return path


def real_vllm_study(
    tmp_path: Path, model: Path, command: list[str], name: str, server_args: Mapping[str, Any], **fields: Any
) -> Path:
    """A study file whose trials start real vLLM with ``command`` and ``server_args`` (600 s to start), its
    runs and SQLite storage (``<name>.db``) under ``tmp_path``; ``fields`` give the rest (search, workload,
    slo, n_trials...)."""
    doc: dict[str, Any] = {
        "name": name,
        "model": str(model),
        "server": {"command": command, "args": dict(server_args), "startup_timeout_s": 600},
        "results_dir": str(tmp_path / "runs"),
        "storage": f"sqlite:///{tmp_path / (name + '.db')}",
        **fields,
    }
    return write_study_file(tmp_path, doc)


def tuner_cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m tuner ARGS`` in a child process, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, timeout=timeout
    )
