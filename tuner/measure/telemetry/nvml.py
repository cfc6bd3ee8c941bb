"""GPU telemetry through NVML (``nvidia-ml-py``, imported as ``pynvml``): a background sampler and two probes.

Contract:

* :class:`GpuSampler` is a context manager. Between ``__enter__`` and ``__exit__`` a daemon thread reads,
  every ``interval_s`` (default 0.5 s), for each selected GPU: utilisation %, memory used MiB, power W,
  SM clock MHz and temperature C. :meth:`GpuSampler.summary` gives the mean and max of each signal over
  every GPU's samples, ``per_gpu`` figures when more than one GPU is selected, and static facts (name,
  memory total, driver, CUDA driver version).
* The GPUs are those named by ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUID prefixes, as CUDA reads
  them: the list stops at the first entry that names no device), or all of them when it is unset.
* Nothing here raises. Without NVML (no library, no driver, no GPU, an empty device list) the sampler is
  *unavailable*: ``summary()`` is ``{"available": False, "reason": ...}`` and the ``on_unavailable``
  callback (default: a log line) is called once per process, however many samplers are made. A signal a
  GPU does not support (power on some boards, say) is left out of the summary; other signals go on.
* The NVML module is injected (``nvml=``; default: ``pynvml``) so tests pass a fake object with the same
  functions. It is initialised in ``__enter__`` and shut down in ``__exit__`` (NVML counts its inits).

:func:`gpu_memory_used_mib` (memory used per selected GPU, for waiting until a stopped server has let its
memory go), :func:`gpu_memory_state` (memory and processes per selected GPU, for
:mod:`tuner.measure.gpufree`'s check before a start) and :func:`static_facts` (what
:mod:`tuner.measure.envinfo` records) open and close NVML themselves.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tuner.measure.gpufree import GpuMemory, GpuProcess

log = logging.getLogger("tuner.measure.telemetry")

#: the sampled signals, in the order the summary lists them
SIGNALS = ("util_pct", "mem_used_mib", "power_w", "sm_clock_mhz", "temp_c")
DEFAULT_INTERVAL_S = 0.5
_MIB = 1024 * 1024
#: pynvml's constants, used when the injected module lacks them
_NVML_CLOCK_SM = 1
_NVML_TEMPERATURE_GPU = 0

Clock = Callable[[], float]
Notice = Callable[[str], None]


class _Once:
    """Process-wide: has the "NVML unavailable" notice been given?"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given = False

    def first(self) -> bool:
        with self._lock:
            given, self._given = self._given, True
            return not given

    def reset(self) -> None:
        with self._lock:
            self._given = False


_UNAVAILABLE_NOTICE = _Once()


def reset_unavailable_notice() -> None:
    """Let the next unavailable sampler say so again (for tests and long-lived processes)."""
    _UNAVAILABLE_NOTICE.reset()


def _default_notice(reason: str) -> None:
    log.info("GPU telemetry unavailable: %s", reason)


def _load_pynvml() -> Any:
    import pynvml

    return pynvml


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def cuda_version_text(version: int) -> str:
    """NVML's CUDA driver version integer -> text: ``13000`` -> ``"13.0"``, ``12040`` -> ``"12.4"``."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def parse_visible_devices(spec: str | None, uuids: Sequence[str]) -> list[int]:
    """The NVML indices ``CUDA_VISIBLE_DEVICES=spec`` selects among devices with these ``uuids``.

    ``None`` or ``"all"`` selects every device; ``""`` none. Entries are indices or UUIDs (``GPU-...``,
    a unique prefix is enough, the ``GPU-`` may be left out). As in CUDA, the list ends at the first entry
    that names no device; a repeated device is taken once. MIG instances are not resolved (they end it).
    """
    count = len(uuids)
    if spec is None or spec.strip().lower() == "all":
        return list(range(count))
    out: list[int] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            break
        idx: int | None = None
        if entry.lstrip("-").isdigit():
            n = int(entry)
            idx = n if 0 <= n < count else None
        else:
            want = entry.lower()
            if not want.startswith(("gpu-", "mig-")):
                want = "gpu-" + want
            hits = [i for i, u in enumerate(uuids) if u.lower().startswith(want)]
            idx = hits[0] if len(hits) == 1 else None
        if idx is None:
            break
        if idx not in out:
            out.append(idx)
    return out


def _visible_spec(visible_devices: str | None) -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES") if visible_devices is None else visible_devices


@dataclass(frozen=True)
class GpuInfo:
    """Static facts of one GPU. ``index`` is NVML's (the physical order), not the CUDA ordinal."""

    index: int
    name: str
    uuid: str
    memory_total_mib: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "memory_total_mib": self.memory_total_mib,
        }


class _Session:
    """NVML opened, the selected devices' handles and static facts. Raises on any NVML failure."""

    def __init__(self, nvml: Any, visible_devices: str | None) -> None:
        self.nvml = nvml
        nvml.nvmlInit()
        self._open = True
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
            spec = _visible_spec(visible_devices)
            chosen = parse_visible_devices(spec, uuids)
            if not chosen:
                why = "no GPU found" if count == 0 else f"no GPU selected by CUDA_VISIBLE_DEVICES={spec!r}"
                raise LookupError(why)
            self.handles = [handles[i] for i in chosen]
            self.gpus = [
                GpuInfo(
                    index=i,
                    name=_text(nvml.nvmlDeviceGetName(handles[i])),
                    uuid=uuids[i],
                    memory_total_mib=int(nvml.nvmlDeviceGetMemoryInfo(handles[i]).total) // _MIB,
                )
                for i in chosen
            ]
            self.driver = _optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
            cuda = _optional(lambda: int(nvml.nvmlSystemGetCudaDriverVersion()))
            self.cuda_driver = cuda_version_text(cuda) if isinstance(cuda, int) else None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._open:
            self._open = False
            _optional(self.nvml.nvmlShutdown)

    def memory_used_mib(self) -> list[int]:
        return [int(self.nvml.nvmlDeviceGetMemoryInfo(h).used) // _MIB for h in self.handles]


def _optional(fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``None`` when it raises anything (NVML's NotSupported, a missing function ...)."""
    try:
        return fn()
    except Exception:
        return None


def _why(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


def _open(nvml: Any | None, visible_devices: str | None) -> _Session:
    return _Session(_load_pynvml() if nvml is None else nvml, visible_devices)


def gpu_memory_used_mib(nvml: Any | None = None, visible_devices: str | None = None) -> list[int] | None:
    """Memory used (MiB) on each selected GPU now, or ``None`` without NVML. Never raises."""
    try:
        s = _open(nvml, visible_devices)
    except Exception:
        return None
    try:
        return s.memory_used_mib()
    except Exception:
        return None
    finally:
        s.close()


def gpu_memory_state(nvml: Any | None = None, visible_devices: str | None = None) -> list[GpuMemory] | None:
    """Each selected GPU's memory now (total, used, free MiB) and the processes NVML lists on it
    (``nvmlDeviceGetComputeRunningProcesses`` and, where present, the graphics ones; ``processes`` None
    when neither answers), in ``CUDA_VISIBLE_DEVICES`` order; ``None`` without NVML. Never raises."""
    try:
        s = _open(nvml, visible_devices)
    except Exception:
        return None
    try:
        out = []
        for g, h in zip(s.gpus, s.handles, strict=True):
            mem = s.nvml.nvmlDeviceGetMemoryInfo(h)
            used, total = int(mem.used) // _MIB, int(mem.total) // _MIB
            free = int(getattr(mem, "free", int(mem.total) - int(mem.used))) // _MIB
            out.append(GpuMemory(g.index, total, used, free, _processes(s.nvml, h)))
        return out
    except Exception:
        return None
    finally:
        s.close()


def _processes(nvml: Any, h: Any) -> tuple[GpuProcess, ...] | None:
    lists: list[list[Any] | None] = []
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            lists.append(list(getattr(nvml, name)(h)))
        except Exception:  # not in this pynvml, NotSupported ...
            lists.append(None)
    if all(found is None for found in lists):
        return None
    seen: dict[int, GpuProcess] = {}
    for p in (p for found in lists for p in found or ()):
        used = getattr(p, "usedGpuMemory", None)  # bytes; None where NVML does not say
        pid = int(p.pid)
        seen.setdefault(pid, GpuProcess(pid, int(used) // _MIB if isinstance(used, int) else None))
    return tuple(seen.values())


def static_facts(nvml: Any | None = None, visible_devices: str | None = None) -> dict[str, Any] | None:
    """``{"name", "count", "memory_total_mib", "driver", "cuda_driver", "gpus": [...]}`` for the selected
    GPUs, or ``None`` without NVML. ``name`` and ``memory_total_mib`` are the first GPU's. Never raises."""
    try:
        s = _open(nvml, visible_devices)
    except Exception:
        return None
    try:
        return _facts(s)
    finally:
        s.close()


def _facts(s: _Session) -> dict[str, Any]:
    return {
        "name": s.gpus[0].name,
        "count": len(s.gpus),
        "memory_total_mib": s.gpus[0].memory_total_mib,
        "driver": s.driver,
        "cuda_driver": s.cuda_driver,
        "gpus": [g.to_dict() for g in s.gpus],
    }


class GpuSampler:
    """Samples the selected GPUs in a background thread while the ``with`` block runs.

    ``interval_s`` is the period between readings; ``clock`` stamps them (monotonic seconds), so
    :meth:`summary` can be limited to a window such as one capacity step. ``on_unavailable`` is called
    with the reason, once per process, when NVML cannot be used.
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        nvml: Any | None = None,
        visible_devices: str | None = None,
        on_unavailable: Notice | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s must be a positive number, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self._nvml = nvml
        self._visible = visible_devices
        self._notice = on_unavailable or _default_notice
        self._clock = clock
        self._session: _Session | None = None
        self._gpus: list[GpuInfo] = []
        self._driver: str | None = None
        self._cuda_driver: str | None = None
        self._reason: str | None = "not started"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # one row per reading: (time, [per GPU: {signal: value}])
        self._samples: list[tuple[float, list[dict[str, float]]]] = []
        self._unsupported: set[tuple[int, str]] = set()
        self._errors = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> GpuSampler:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Open NVML, take a first reading and start the thread. Unavailable NVML is noted, not raised."""
        if self._session is not None:
            return
        try:
            self._session = _open(self._nvml, self._visible)
        except Exception as e:
            self._reason = _why(e)
            if _UNAVAILABLE_NOTICE.first():
                with contextlib.suppress(Exception):
                    self._notice(self._reason)
            return
        self._reason = None
        self._gpus = list(self._session.gpus)
        self._driver, self._cuda_driver = self._session.driver, self._session.cuda_driver
        self._stop.clear()
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="tuner-gpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after one last reading) and close NVML. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=max(5.0, 4 * self.interval_s))
            self.sample_once()
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    # -- readings --------------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True once NVML opened and at least one GPU is selected."""
        return self._reason is None

    @property
    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    def sample_once(self) -> None:
        """Read every signal of every selected GPU now (the thread calls this). Never raises."""
        s = self._session
        if s is None:
            return
        row: list[dict[str, float]] = []
        for gi, h in enumerate(s.handles):
            row.append(self._read(s.nvml, gi, h))
        with self._lock:
            self._samples.append((self._clock(), row))

    def _read(self, nvml: Any, gi: int, h: Any) -> dict[str, float]:
        readers: dict[str, Callable[[], float]] = {
            "util_pct": lambda: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu),
            "mem_used_mib": lambda: float(int(nvml.nvmlDeviceGetMemoryInfo(h).used) / _MIB),
            "power_w": lambda: float(nvml.nvmlDeviceGetPowerUsage(h)) / 1000.0,
            "sm_clock_mhz": lambda: float(
                nvml.nvmlDeviceGetClockInfo(h, getattr(nvml, "NVML_CLOCK_SM", _NVML_CLOCK_SM))
            ),
            "temp_c": lambda: float(
                nvml.nvmlDeviceGetTemperature(h, getattr(nvml, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU))
            ),
        }
        out: dict[str, float] = {}
        for name, read in readers.items():
            if (gi, name) in self._unsupported:
                continue
            try:
                v = read()
            except Exception as e:
                if "NotSupported" in type(e).__name__ or "Not Supported" in str(e):
                    self._unsupported.add((gi, name))
                self._errors += 1
                continue
            if math.isfinite(v):
                out[name] = v
        return out

    # -- results ---------------------------------------------------------------------------------------

    def summary(self, start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """Mean and max per signal, over the readings stamped in ``[start, end]`` (default: all).

        Shape when available::

            {"available": True, "name": "NVIDIA H200", "count": 1, "memory_total_mib": 143771,
             "driver": "580.159.04", "cuda_driver": "13.0", "interval_s": 0.5, "samples": 42,
             "duration_s": 20.5, "util_pct": {"mean": 97.1, "max": 100.0}, "mem_used_mib": {...},
             "power_w": {...}, "sm_clock_mhz": {...}, "temp_c": {...},
             "per_gpu": [{"index": 0, "name": ..., "uuid": ..., "memory_total_mib": ..., "util_pct": {...}}]}

        The top-level signals pool every selected GPU's readings (a per-GPU mean and max, not a sum);
        ``per_gpu`` is there only with more than one GPU; a signal with no reading is left out.
        Otherwise ``{"available": False, "reason": "..."}``.
        """
        if self._reason is not None:
            return {"available": False, "reason": self._reason}
        with self._lock:
            rows = [
                (t, r)
                for t, r in self._samples
                if (start is None or t >= start) and (end is None or t <= end)
            ]
        gpus = self.gpus
        out: dict[str, Any] = {
            "available": True,
            "name": gpus[0].name if gpus else None,
            "count": len(gpus),
            "memory_total_mib": gpus[0].memory_total_mib if gpus else None,
        }
        out["driver"] = self._driver
        out["cuda_driver"] = self._cuda_driver
        out["interval_s"] = self.interval_s
        out["samples"] = len(rows)
        out["duration_s"] = round(rows[-1][0] - rows[0][0], 3) if len(rows) > 1 else 0.0
        out.update(_stats([reading for _, r in rows for reading in r]))
        if len(gpus) > 1:
            out["per_gpu"] = [
                {**g.to_dict(), **_stats([r[gi] for _, r in rows if gi < len(r)])}
                for gi, g in enumerate(gpus)
            ]
        return out


def _stats(readings: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in SIGNALS:
        values = [r[name] for r in readings if name in r]
        if values:
            out[name] = {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}
    return out
