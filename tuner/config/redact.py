"""Secrets out of everything tuner stores or prints. Pure: no I/O except :func:`redact_file`.

A *secret* is

* the value of an environment variable whose name says so (:func:`is_secret_env`): ``HF_TOKEN``,
  ``HUGGING_FACE_HUB_TOKEN``, ``VLLM_API_KEY``, ``OPENAI_API_KEY`` and any ``*_TOKEN``, ``*_API_KEY``,
  ``*_SECRET``, ``*_PASSWORD`` name — in ``os.environ`` or in the study's ``server.env``;
* the password in a URL (a PostgreSQL storage URL, say);
* the value of a server flag whose name says so (:func:`is_secret_flag`): ``--api-key``, ``--hf-token``,
  and any ``*-token``, ``*-secret``, ``*-password`` flag (``--max-num-batched-tokens`` and ``--tokenizer``
  are not).

A :class:`Redactor` holds the secret values and replaces each occurrence with :data:`MASK` in text, argv
lists (``--api-key VALUE`` and ``--api-key=VALUE`` as well), flag mappings and any JSON-like structure. Values
shorter than :data:`MIN_SECRET_CHARS` are not treated as secrets (``1`` or ``true`` would mask half a log).

tuner also keeps secret flags off the server's command line: :func:`secret_flag_env` moves ``--api-key`` to
``VLLM_API_KEY`` and ``--hf-token`` to ``HF_TOKEN``, so vLLM never logs them with its arguments. The API key's
flag and variable are :mod:`tuner.server.env`'s, which also says how the key is sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.server.env import API_KEY_ENV, API_KEY_FLAG

if TYPE_CHECKING:
    from tuner.config.spec import StudySpec

MASK = "***"
MIN_SECRET_CHARS = 4

#: names that are secrets whatever the patterns say
SECRET_ENV_NAMES = frozenset(
    {
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACE_HUB_TOKEN",
        API_KEY_ENV,
        "OPENAI_API_KEY",
        "PGPASSWORD",
    }
)
_SECRET_ENV_RE = re.compile(r"(^|_)(TOKEN|API_KEY|APIKEY|SECRET|SECRET_KEY|PASSWORD|PASSWD|ACCESS_KEY)$")
_SECRET_FLAG_RE = re.compile(r"(^|-)(api-key|token|secret|password|passwd)$")
#: the password of a URL (``postgresql://user:PASSWORD@host/db``)
_URL_PASSWORD_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@\s]+)(@)", re.IGNORECASE)

#: secret flags tuner passes to the server through its environment instead of argv
FLAG_ENV = {API_KEY_FLAG: API_KEY_ENV, "hf-token": "HF_TOKEN"}


def is_secret_env(name: str) -> bool:
    """True for an environment variable whose value must never be stored or printed."""
    upper = name.upper()
    return upper in SECRET_ENV_NAMES or bool(_SECRET_ENV_RE.search(upper))


def is_secret_flag(name: str) -> bool:
    """True for a server flag (with or without dashes) whose value must never be stored or printed."""
    return bool(_SECRET_FLAG_RE.search(name.lstrip("-").split("=", 1)[0].lower()))


def secret_flag_env(flags: Mapping[str, Any]) -> dict[str, str]:
    """The environment that carries the secret flags of ``flags`` (``{"VLLM_API_KEY": ...}``)."""
    out: dict[str, str] = {}
    for name, env_name in FLAG_ENV.items():
        value = flags.get(name)
        if value is not None and not isinstance(value, bool):
            out[env_name] = str(value)
    return out


class Redactor:
    """Replaces known secret values (see the module docstring) with :data:`MASK`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a secret that contains another is masked whole
        found = {s for s in secrets if isinstance(s, str) and len(s.strip()) >= MIN_SECRET_CHARS}
        self.secrets: tuple[str, ...] = tuple(sorted(found, key=len, reverse=True))

    @classmethod
    def from_sources(
        cls, *envs: Mapping[str, str], flags: Mapping[str, Any] | None = None, extra: Iterable[str] = ()
    ) -> Redactor:
        """A redactor for the secret values of ``envs`` (e.g. ``os.environ`` and ``server.env``) and
        ``flags`` (e.g. ``server.args``), plus ``extra``."""
        values = [v for env in envs for k, v in env.items() if is_secret_env(k)]
        values += [str(v) for k, v in (flags or {}).items() if is_secret_flag(k) and not isinstance(v, bool)]
        return cls([*values, *extra])

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, value: str) -> str:
        """``value`` with every known secret, and the password of any URL in it, masked."""
        for s in self.secrets:
            if s in value:
                value = value.replace(s, MASK)
        if "://" in value:
            value = _URL_PASSWORD_RE.sub(rf"\g<1>{MASK}\g<3>", value)
        return value

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` with the value of each secret flag, and every known secret, masked."""
        out: list[str] = []
        hide_next = False
        for arg in argv:
            if hide_next:
                out.append(MASK)
                hide_next = False
                continue
            if arg.startswith("--") and is_secret_flag(arg):
                if "=" in arg:
                    out.append(arg.split("=", 1)[0] + "=" + MASK)
                else:
                    out.append(arg)
                    hide_next = True
                continue
            out.append(self.text(arg))
        return out

    def flags(self, flags: Mapping[str, Any]) -> dict[str, Any]:
        """A flag mapping with secret flags' values masked (and known secrets masked anywhere)."""
        return {k: MASK if is_secret_flag(k) and v is not None else self.obj(v) for k, v in flags.items()}

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """An environment mapping with secret variables' values masked."""
        return {k: MASK if is_secret_env(k) else self.text(v) for k, v in env.items()}

    def obj(self, value: Any) -> Any:
        """Any JSON-like structure with every known secret masked in its strings (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {(self.text(k) if isinstance(k, str) else k): self.obj(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.obj(v) for v in value]
        return value


def spec_redactor(spec: StudySpec, environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor of a study: secrets of ``environ`` (default ``os.environ``), ``server.env``, and the
    secret flags of ``server.args`` and of a baseline mapping."""
    base = spec.baseline if isinstance(spec.baseline, dict) else {}
    extra = [
        str(v) for k, v in base.items() if is_secret_flag(k) and v is not None and not isinstance(v, bool)
    ]
    env = os.environ if environ is None else environ
    return Redactor.from_sources(env, spec.server.env, flags=spec.server.args, extra=extra)


def spec_data(spec: StudySpec, redactor: Redactor | None = None) -> dict[str, Any]:
    """The study file as JSON-able data with secrets masked (what tuner stores as the study's ``spec``)."""
    import json

    r = redactor or spec_redactor(spec)
    data: dict[str, Any] = json.loads(spec.model_dump_json())
    server = data.get("server") or {}
    server["env"] = r.env(server.get("env") or {})
    server["args"] = r.flags(server.get("args") or {})
    if isinstance(data.get("baseline"), dict):
        data["baseline"] = r.flags(data["baseline"])
    out: dict[str, Any] = r.obj(data)
    return out


def redact_file(path: str | Path, redactor: Redactor) -> bool:
    """Mask every known secret in a text file (a server log) in place. Returns whether it changed."""
    if not redactor:
        return False
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError:
        return False
    text = data.decode("utf-8", errors="surrogateescape")
    clean = redactor.text(text)
    if clean == text:
        return False
    try:
        p.write_bytes(clean.encode("utf-8", errors="surrogateescape"))
    except OSError:
        return False
    return True


__all__ = [
    "FLAG_ENV",
    "MASK",
    "Redactor",
    "is_secret_env",
    "is_secret_flag",
    "redact_file",
    "secret_flag_env",
    "spec_data",
    "spec_redactor",
]
