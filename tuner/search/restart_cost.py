"""vLLM's compile cache as a cost of the search: which flags make a new compile key, what a new key costs.

A vLLM server start compiles the model (torch.compile, CUDA graphs) unless vLLM's compile cache already
holds an entry for the same *compile key*: a hash of the configuration fields that shape the compiled graph
(``VllmConfig.compute_hash``). On the lent H200 a start took 47-64 s with a key the machine had compiled
before and 72-101 s with a new one, in trials of ~130 s: the start is most of a trial's cost. Pure, except
:func:`cache_identity`, which reads (and once writes) a marker file in the cache folder.

* :func:`compile_key` — the key of an *effective* flag set (fixed ``server.args`` + a trial's params, as
  :func:`tuner.config.argv.trial_flags` merges them) and model: every flag counts except :data:`NEUTRAL_FLAGS`,
  which vLLM leaves out of its hash (memory sizing, prefix caching, scheduling policy, logging, serving).
  An unknown flag counts, so the key may be finer than vLLM's (a missed reuse), never coarser. An absent
  flag (or a ``none`` choice: "leave vLLM's default") is a key of its own, even where vLLM's default equals
  a searched value.
* :func:`cache_identity` — which compile cache a server started from here will use: host and a random id
  kept in the cache folder (``$VLLM_CACHE_ROOT``, else ``$XDG_CACHE_HOME/vllm``, else ``~/.cache/vllm``), so
  a fresh machine, a wiped cache or another host is a different cache; None when the cache is off
  (``VLLM_DISABLE_COMPILE_CACHE``) or the folder cannot be written.
* :class:`RestartCost` — the expected seconds of a trial with a compiled key and with a new one, learnt from
  the study's own launched trials (median server start of each kind, median rest of the trial), with
  :data:`PRIOR_CACHED_RATIO` standing in for the kind not yet seen. :meth:`RestartCost.log_cost` is what the
  cost-aware sampler (:mod:`tuner.search.samplers`) divides expected improvement by. Where starts with a compiled key
  are not faster (a machine where compilation is cheap), both costs are equal and the search is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import statistics
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: flags vLLM leaves out of its compile hash (``CacheConfig`` / ``SchedulerConfig`` / ``ModelConfig``
#: ``compute_hash`` in vLLM 0.10-0.32) or that only touch the API server
NEUTRAL_FLAGS = frozenset(
    {
        # KV-cache sizing and prefix caching (CacheConfig's ignored factors)
        "gpu-memory-utilization",
        "kv-cache-memory",
        "kv-cache-memory-bytes",
        "num-gpu-blocks-override",
        "swap-space",
        "enable-prefix-caching",
        "no-enable-prefix-caching",
        "prefix-caching-hash-algo",
        # scheduling (SchedulerConfig hashes only max-num-batched-tokens and max-num-seqs)
        "enable-chunked-prefill",
        "no-enable-chunked-prefill",
        "long-prefill-token-threshold",
        "max-num-partial-prefills",
        "max-long-partial-prefills",
        "scheduling-policy",
        "async-scheduling",
        "no-async-scheduling",
        # ModelConfig's ignored factors
        "seed",
        "tokenizer",
        "tokenizer-mode",
        "tokenizer-revision",
        "served-model-name",
        "skip-tokenizer-init",
        "disable-cascade-attn",
        "logprobs-mode",
        "hf-token",
        # the API server and logging
        "host",
        "port",
        "api-key",
        "uvicorn-log-level",
        "disable-uvicorn-access-log",
        "disable-log-requests",
        "enable-log-requests",
        "disable-log-stats",
        "max-log-len",
        "disable-fastapi-docs",
    }
)

#: server start with a compiled key / with a new key, before the study has seen one of the two kinds
#: (H200, vLLM 0.26.0, Llama-3.1-8B: 47-64 s against 72-101 s, mid-points 55.5 / 86.5)
PRIOR_CACHED_RATIO = 0.64
#: seconds assumed for a start and for the rest of a trial before the study has launched any trial
PRIOR_START_S = 85.0
PRIOR_REST_S = 45.0
#: the cache marker's file name in vLLM's cache folder
MARKER = "tuner-cache-id"


def compile_key(flags: Mapping[str, Any], model: str) -> str:
    """A short stable id of the compile key of these effective flags and model (see the module docstring)."""
    shaping = {k: v for k, v in flags.items() if k not in NEUTRAL_FLAGS and v is not None}
    text = json.dumps([model, sorted(shaping.items())], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_folder(env: Mapping[str, str]) -> Path | None:
    """vLLM's cache folder for a server started with ``env`` (None when its compile cache is disabled)."""
    if env.get("VLLM_DISABLE_COMPILE_CACHE", "0").strip().lower() not in ("", "0", "false"):
        return None
    root = env.get("VLLM_CACHE_ROOT")
    if root:
        return Path(root).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path(env.get("HOME") or Path.home()) / ".cache"
    return base / "vllm"


def cache_identity(env: Mapping[str, str]) -> str | None:
    """``host:id`` of the compile cache a server started with ``env`` uses, the id kept in a marker file in
    the cache folder (written on first use); None when the cache is off or the folder cannot be written."""
    folder = cache_folder(env)
    if folder is None:
        return None
    marker = folder / MARKER
    try:
        token = marker.read_text().strip() if marker.exists() else ""
        if not token:
            folder.mkdir(parents=True, exist_ok=True)
            token = uuid.uuid4().hex[:16]
            tmp = folder / f".{MARKER}.{os.getpid()}"
            tmp.write_text(token + "\n")
            os.replace(tmp, marker)
            token = marker.read_text().strip() or token
    except OSError:
        return None
    return f"{socket.gethostname()}:{token}"


@dataclass(frozen=True)
class Launch:
    """What one finished trial says about the compile cache."""

    key: str
    cache: str | None
    cached: bool  # its key had been compiled in the same cache before it started
    startup_s: float | None  # launch to healthy; None when the server never became healthy
    trial_s: float | None  # the whole trial
    params: Mapping[str, Any] | None = None  # its searched params (None for the baseline)
    launched: bool = True  # False: refused before launch (a rule, or the memory check); costs no start


@dataclass(frozen=True)
class RestartCost:
    """Expected trial seconds by compile key: ``cached_s`` for a key in :attr:`compiled`, else ``new_s``."""

    compiled: frozenset[str]
    new_s: float
    cached_s: float
    key_of: Callable[[Mapping[str, Any]], str]
    #: the compile-key-shaping searched params of each compiled key (searched flags not in NEUTRAL_FLAGS)
    compiled_params: tuple[Mapping[str, Any], ...] = ()

    def seconds(self, params: Mapping[str, Any]) -> float:
        return self.cached_s if self.key_of(params) in self.compiled else self.new_s

    def log_cost(self, params: Mapping[str, Any]) -> float:
        return math.log(self.seconds(params))

    @property
    def saving(self) -> float:
        """The share of a trial's time a compiled key saves (0 when none)."""
        return max(0.0, 1.0 - self.cached_s / self.new_s)

    @classmethod
    def learn(
        cls,
        launches: Iterable[Launch],
        *,
        cache: str | None,
        key_of: Callable[[Mapping[str, Any]], str],
    ) -> RestartCost:
        """The costs from ``launches`` (any cache: a start's length is a property of the machine kind), the
        compiled keys from those of them that became healthy in ``cache`` (none when ``cache`` is None)."""
        seen = list(launches)
        healthy = [x for x in seen if x.startup_s is not None and x.startup_s > 0]
        compiled = frozenset(x.key for x in healthy if cache is not None and x.cache == cache)
        new_starts = [x.startup_s for x in healthy if not x.cached and x.startup_s is not None]
        cached_starts = [x.startup_s for x in healthy if x.cached and x.startup_s is not None]
        rests = [
            x.trial_s - x.startup_s
            for x in healthy
            if x.trial_s is not None and x.startup_s is not None and x.trial_s >= x.startup_s
        ]
        new = statistics.median(new_starts) if new_starts else None
        old = statistics.median(cached_starts) if cached_starts else None
        if new is None and old is None:
            new = PRIOR_START_S
        if new is None:
            assert old is not None
            new = old / PRIOR_CACHED_RATIO
        if old is None:
            old = new * PRIOR_CACHED_RATIO
        old = min(old, new)  # a compiled key is never assumed slower than a new one
        rest = statistics.median(rests) if rests else PRIOR_REST_S
        shaping: dict[str, Mapping[str, Any]] = {}
        for x in healthy:
            if x.key in compiled and x.params and x.key not in shaping:
                shaping[x.key] = {k: v for k, v in x.params.items() if k not in NEUTRAL_FLAGS}
        return cls(
            compiled=compiled,
            new_s=new + rest,
            cached_s=old + rest,
            key_of=key_of,
            compiled_params=tuple(shaping.values()),
        )


__all__ = [
    "MARKER",
    "NEUTRAL_FLAGS",
    "PRIOR_CACHED_RATIO",
    "Launch",
    "RestartCost",
    "cache_folder",
    "cache_identity",
    "compile_key",
]
