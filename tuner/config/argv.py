"""Params -> the server's argv. Pure: the same inputs give the same list, and nothing touches a shell.

Rules, in order:

* the model comes first: positional after ``serve`` (``vllm serve MODEL``), else ``--model MODEL``;
* ``--host`` and ``--port`` are tuner's (bound to 127.0.0.1 unless the study says otherwise);
* fixed ``server.args`` then the trial's params, both in sorted flag order so argv is stable;
* a value of ``None`` (or the choice ``none``) means "leave vLLM's default": the flag is not passed;
* ``True`` passes ``--flag``; ``False`` passes ``--no-flag`` (vLLM's boolean flags accept both forms);
* a checkpoint choice (``{name: awq, model: ...}``) swaps the model and passes ``--quantization NAME``;
* secret flags (``api-key``, ``hf-token``) never appear in argv: they go to the server's environment
  (``VLLM_API_KEY``, ``HF_TOKEN``; ``ServerPlan.env``), so neither vLLM's log nor the stored argv holds them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tuner.config.paths import resolve_model
from tuner.config.redact import FLAG_ENV, secret_flag_env
from tuner.config.spec import Checkpoint, Choices, FlagValue, StudySpec


@dataclass(frozen=True)
class ServerPlan:
    """Everything needed to start one server: argv and the model it serves."""

    argv: list[str]
    model: str
    flags: dict[str, FlagValue]  # the effective flags (fixed + trial), without host/port/model
    env: dict[str, str] = field(default_factory=dict)  # secret flags, passed through the environment


def format_value(value: int | float | str) -> str:
    """``0.30000000000000004`` -> ``0.3``; ints stay ints; strings as they are."""
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text if "e" not in text else repr(value)
    return str(value)


def flag_args(flags: Mapping[str, FlagValue]) -> list[str]:
    """``{"max-num-seqs": 64, "enable-prefix-caching": False}`` -> ``["--enable-prefix-caching" ...]``."""
    out: list[str] = []
    for name in sorted(flags):
        value = flags[name]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            continue
        if value is True:
            out.append(f"--{name}")
        elif value is False:
            out.append(f"--no-{name}")
        else:
            out += [f"--{name}", format_value(value)]
    return out


def model_position(command: Sequence[str]) -> str:
    """``"positional"`` for ``... serve``, else ``"flag"``."""
    return "positional" if command and command[-1] == "serve" else "flag"


def trial_flags(spec: StudySpec, params: Mapping[str, FlagValue]) -> tuple[dict[str, FlagValue], str]:
    """Merge fixed args and the trial's params; resolve checkpoint choices. Returns (flags, model)."""
    flags: dict[str, FlagValue] = dict(spec.server.args)
    model = resolve_model(spec)
    for name, value in params.items():
        entry = spec.search.get(name)
        if isinstance(entry, Choices):
            try:
                choice = entry.value_of(value)
            except KeyError:
                choice = value
            if isinstance(choice, Checkpoint):
                model = resolve_model(spec, choice.model)
                flags[name] = choice.name
                continue
            flags[name] = None if choice == "none" else choice
        else:
            flags[name] = value
    return flags, model


def build_plan(
    spec: StudySpec, params: Mapping[str, FlagValue], port: int, host: str | None = None
) -> ServerPlan:
    """The argv for one trial: ``command`` + model + host/port + fixed args + params."""
    flags, model = trial_flags(spec, params)
    command = resolve_command(spec.server.command)
    argv = [*command, model] if model_position(command) == "positional" else [*command, "--model", model]
    if spec.served_model_name:
        argv += ["--served-model-name", spec.served_model_name]
    argv += ["--host", host or spec.server.host, "--port", str(port)]
    argv += flag_args({k: v for k, v in flags.items() if k not in FLAG_ENV})
    return ServerPlan(argv=argv, model=model, flags=flags, env=secret_flag_env(flags))


def resolve_command(command: Sequence[str]) -> list[str]:
    """``python``/``python3`` as the first word means the interpreter running tuner (its venv has vLLM)."""
    cmd = list(command)
    if cmd and cmd[0] in ("python", "python3"):
        cmd[0] = sys.executable
    return cmd


def shell_command(argv: Sequence[str]) -> str:
    """A copy-paste-able command line (for export and logs only; servers are never started via a shell)."""
    import shlex

    return " ".join(shlex.quote(a) for a in argv)
