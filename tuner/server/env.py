"""The environment a server runs in, and the API key it demands. Pure (``os.environ`` is the default).

* :func:`server_env`: this process's environment with the study file's ``server.env`` (and the secret
  flags tuner moves into the environment) on top; what :class:`tuner.server.process.VllmServer` starts the
  server with and what the compile-cache identity is read from.
* :func:`gpu_env`: ``CUDA_VISIBLE_DEVICES`` for a parallel trial's GPU set (:mod:`tuner.search.slots`).
* The API key: vLLM takes it from its ``--api-key`` flag or from ``VLLM_API_KEY`` and then demands
  ``Authorization: Bearer KEY`` on its ``/v1`` routes. tuner never puts the flag on the command line
  (:func:`tuner.config.redact.secret_flag_env` moves it to :data:`API_KEY_ENV`). :func:`auth_headers` is the
  one place that knows where the key comes from (the flag first, then the server's environment) and how it
  is sent; the load, the ``/health`` and the ``/metrics`` calls all use it, and so does the redactor's list
  of secret names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

#: the server flag that carries vLLM's API key, and the environment variable vLLM reads it from
API_KEY_FLAG = "api-key"
API_KEY_ENV = "VLLM_API_KEY"
#: the variable that gives a server its GPUs (indices or UUIDs, comma-separated)
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


def server_env(extra: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a server gets: ``environ`` (default: this process's), with ``extra`` on top."""
    return {**(os.environ if environ is None else environ), **extra}


def gpu_env(gpus: Sequence[str]) -> dict[str, str]:
    """The environment entry that confines a server to ``gpus`` (a parallel trial's GPU set)."""
    return {VISIBLE_DEVICES_ENV: ",".join(gpus)}


def api_key(
    flags: Mapping[str, Any], env: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> str | None:
    """The API key of a server started with ``flags`` and ``env`` over ``environ``; None when it has none."""
    value = flags.get(API_KEY_FLAG)
    if value is not None and not isinstance(value, bool) and str(value):
        return str(value)
    return server_env(env, environ).get(API_KEY_ENV) or None


def auth_headers(
    flags: Mapping[str, Any], env: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{"Authorization": "Bearer KEY"}`` for a server with an API key (see :func:`api_key`), else ``{}``."""
    key = api_key(flags, env, environ)
    return {"Authorization": f"Bearer {key}"} if key else {}


__all__ = [
    "API_KEY_ENV",
    "API_KEY_FLAG",
    "VISIBLE_DEVICES_ENV",
    "api_key",
    "auth_headers",
    "gpu_env",
    "server_env",
]
