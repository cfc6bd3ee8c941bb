"""Study-file changes on resume: which differences between the stored study file (the study's ``spec``
attribute) and the file given now leave the stored trials valid. Pure: data in, data out.

Contract:

* :func:`diff` lists the differences leaf by leaf as dotted key paths (``slo.ttft_p99_ms``,
  ``search.max-num-seqs.high``); lists (``server.command``, a choice list, ``objectives``) compare whole. A
  key absent on one side and null on the other is no change (a key added to the file format later, with a
  null default, does not make every older study "changed").
* :func:`invalidates` classifies a path by its longest listed prefix. **Invalidating** — what the stored
  trials were measured or scored under: the model, the server's command, flags and environment, the search
  space, the workload (the traffic, the load steps and the capacity rule), the SLO and the objectives.
  **Harmless** — :data:`HARMLESS`: the budget, the timeout, the sampler and its seed, ``confirm``, where
  things are stored, the server's host and timeouts, the baseline (trial 0 keeps the flags it ran with, as
  stored with it), the served model name, the GPUs (``resources``) and the warm start (``prior``: it only
  chooses where to look first). A path listed nowhere invalidates: a new key is treated as a
  change of what was measured until it is listed here.
* :func:`describe` names at most :data:`SHOWN` changes in one line (``old -> new``), then how many more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: top-level (or dotted) keys of a study file whose change leaves the stored trials valid
HARMLESS = frozenset(
    {
        "name",
        "storage",
        "source",
        "results_dir",
        "n_trials",
        "timeout_s",
        "sampler",
        "seed",
        "compile_key_reuse",
        "confirm",
        "baseline",
        "served_model_name",
        "server.host",
        "server.startup_timeout_s",
        "server.stop_timeout_s",
        "resources",
        "prior",
    }
)
#: changes named by :func:`describe`
SHOWN = 3
#: characters of one value shown by :func:`describe`
VALUE_CHARS = 40


class _Absent:
    """A key one side of a :class:`Change` lacks."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Change:
    """One difference: ``old`` (stored) -> ``new`` (the file now); :data:`ABSENT` where a side lacks it."""

    path: str
    old: Any
    new: Any

    @property
    def invalidates(self) -> bool:
        return invalidates(self.path)


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[Change]:
    """The differences between two study files as data, in key order (see the module docstring)."""
    out: list[Change] = []
    for key in [*old, *(k for k in new if k not in old)]:
        path = f"{prefix}{key}"
        a, b = old.get(key, ABSENT), new.get(key, ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += diff(a, b, path + ".")
        elif not _same(a, b):
            out.append(Change(path, a, b))
    return out


def _same(a: Any, b: Any) -> bool:
    if a is ABSENT or b is ABSENT:
        return (None if a is ABSENT else a) == (None if b is ABSENT else b)
    return bool(a == b)


def invalidates(path: str) -> bool:
    """Does a change at ``path`` invalidate the stored trials? (module docstring)"""
    parts = path.split(".")
    return not any(".".join(parts[:n]) in HARMLESS for n in range(len(parts), 0, -1))


def describe(changes: Sequence[Change]) -> str:
    """``slo.ttft_p99_ms 1000.0 -> 100.0, search.block-size.choices [16, 32] -> [32]`` (and N more)."""
    shown = [f"{c.path} {_value(c.old)} -> {_value(c.new)}" for c in changes[:SHOWN]]
    more = len(changes) - SHOWN
    return ", ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _value(v: Any) -> str:
    text = repr(v) if v is ABSENT else json.dumps(v, separators=(", ", ": "), default=str)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."


def file_keys(data: Any, prefix: str = "") -> list[str]:
    """``path: value`` for every string under a key named ``path`` or ``file`` (the files a workload names,
    whose bytes are part of its traffic digest)."""
    out: list[str] = []
    if isinstance(data, Mapping):
        for k, v in data.items():
            if k in ("path", "file") and isinstance(v, str):
                out.append(f"{prefix}{k}: {v}")
            else:
                out += file_keys(v, f"{prefix}{k}.")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += file_keys(v, f"{prefix}{i}.")
    return out
