"""A stored trial -> a ready-to-run vLLM configuration: a ``vllm serve`` command line or a config file.

* :func:`serve_args` — ``(model, flags)`` of a trial: the model comes from the stored argv (so a checkpoint
  choice's swapped model is kept), the flags from the stored effective flags (fixed ``server.args`` + the
  trial's params); tuner's own ``--host``/``--port`` are never part of it.
* :func:`to_command` — ``[env VAR=value ...] vllm serve MODEL --flag value ...``, each word shell-quoted
  (same flag rules as :func:`tuner.config.argv.flag_args`: ``True`` -> ``--flag``, ``False`` -> ``--no-flag``,
  None/"none" left out).
* :func:`to_yaml` — a file for ``vllm serve --config FILE``: flag names as keys, the model under ``model:``
  (vLLM maps ``false`` to ``--no-flag`` itself); None/"none" left out; the server's environment as comment
  lines above it (the config file cannot set it; :func:`env_file` writes its companion).
* :func:`server_env` — the study's ``server.env`` split into what may be written and the names of secrets
  (:func:`tuner.config.redact.is_secret_env`), which never are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from optuna.trial import FrozenTrial

from tuner.config.argv import flag_args, format_value, shell_command
from tuner.config.redact import is_secret_env
from tuner.errors import TunerError
from tuner.search.record import read

#: flags that belong to the machine tuner ran on, not to the configuration
_TUNER_OWNED = ("host", "port")


def _model_from_argv(argv: Sequence[str]) -> str | None:
    """The model of a stored server argv: ``--model X``, else the word after ``serve``."""
    words = list(argv)
    for i, w in enumerate(words):
        if w == "--model" and i + 1 < len(words):
            return words[i + 1]
        if w.startswith("--model="):
            return w.split("=", 1)[1]
    if "serve" in words:
        i = words.index("serve")
        if i + 1 < len(words) and not words[i + 1].startswith("-"):
            return words[i + 1]
    return None


def _served_name(argv: Sequence[str]) -> str | None:
    words = list(argv)
    if "--served-model-name" in words:
        i = words.index("--served-model-name")
        return words[i + 1] if i + 1 < len(words) else None
    return None


def serve_args(trial: FrozenTrial, default_model: str | None = None) -> tuple[str, dict[str, Any]]:
    """``(model, flags)`` to serve ``trial``'s configuration. Raises :class:`TunerError` when the trial
    stored neither an argv nor a model to fall back on."""
    rec = read(trial)
    argv = list(rec.argv)
    model = _model_from_argv(argv) or default_model
    if not model:
        raise TunerError(f"trial {trial.number} stored no server command to export")
    flags = {
        k: v
        for k, v in dict(rec.result.flags if rec.result else {}).items()
        if k not in _TUNER_OWNED and k != "model"
    }
    served = _served_name(argv)
    if served and "served-model-name" not in flags:
        flags["served-model-name"] = served
    return model, flags


def _kept(flags: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in flags.items() if v is not None and not (isinstance(v, str) and v.lower() == "none")
    }


def server_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``(env without secrets, the secret names left out)``, each in sorted order."""
    kept = {k: str(env[k]) for k in sorted(env) if not is_secret_env(k)}
    return kept, sorted(k for k in env if is_secret_env(k))


def to_command(model: str, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """``[env VAR=value ...] vllm serve MODEL --flag value ...`` (shell-quoted, flags in sorted order)."""
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return shell_command([*prefix, "vllm", "serve", model, *flag_args(_kept(flags))])


def env_file(env: Mapping[str, str]) -> str:
    """``VAR=value`` lines (values shell-quoted where they need it)."""
    return "".join(f"{shell_command([f'{k}={v}'])}\n" for k, v in env.items())


def to_yaml(model: str, flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """A ``vllm serve --config`` file: ``model:`` first, then the flags in sorted order; ``env`` as comment
    lines above (``# env: VAR=value``)."""
    head = ""
    if env:
        head = "# the server's environment (vllm serve --config does not set it):\n"
        head += "".join(f"# env: {line}\n" for line in env_file(env).splitlines())
    data: dict[str, Any] = {"model": model}
    kept = _kept(flags)
    for k in sorted(kept):
        v = kept[k]
        data[k] = float(format_value(v)) if isinstance(v, float) else v
    text: str = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return head + text
