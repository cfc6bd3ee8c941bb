"""Every flag a study would pass, checked against the installed vLLM's own argument parser.

Contract of :func:`check_flags` (``tuner run``/``resume``/``measure`` call it before anything is written):

* only when ``server.command`` starts vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``,
  ``vllm serve``, ``python -m vllm.entrypoints.cli.main serve``) and its interpreter has vLLM installed;
* the parser is vLLM's ``make_arg_parser(FlexibleArgumentParser())``, built in a subprocess of that
  interpreter (importing vLLM takes 10-40 s, so the option list is cached per interpreter and vLLM install in
  ``$TUNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/tuner``, else ``~/.cache/tuner``);
* the options checked are the ones tuner would pass: ``--NAME`` for each flag of ``server.args``, ``search``,
  a baseline mapping and ``--set``, and ``--no-NAME`` where the value can be ``false``;
* an unknown option raises :class:`~tuner.errors.UsageError`: one line naming where it comes from, the
  option and the closest known option;
* when the parser cannot be built (no vLLM in that interpreter, a timeout, an import error) nothing is
  checked: vLLM itself refuses a bad flag at start (``invalid_config``). ``TUNER_CHECK_VLLM_FLAGS=0`` turns
  the check off.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tuner.config.argv import resolve_command
from tuner.config.spec import Choices, FlagValue, StudySpec
from tuner.errors import UsageError

#: modules (after ``-m``) and words that mean "this command is vLLM's OpenAI server"
VLLM_MODULES = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main")
#: seconds the parser subprocess may take (vLLM's import is slow on small machines)
PARSER_TIMEOUT_S = float(os.environ.get("TUNER_VLLM_PARSER_TIMEOUT_S", "300"))
_MARK = "TUNER_VLLM_FLAGS "

_PARSER_SCRIPT = """\
import json, sys
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser
make = None
for mod in ("vllm.entrypoints.openai.cli_args", "vllm.entrypoints.launchers.cli_args"):
    try:
        make = __import__(mod, fromlist=["make_arg_parser"]).make_arg_parser
        break
    except (ImportError, AttributeError):
        continue
if make is None:
    sys.exit("no make_arg_parser in this vLLM")
parser = make(FlexibleArgumentParser())
flags = sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--")})
sys.stdout.write("\\n%s%s\\n" % (sys.argv[1], json.dumps(flags)))
"""

_ORIGIN_SCRIPT = (
    "import importlib.util as u; s = u.find_spec('vllm'); print(s.origin if s and s.origin else '')"
)


def is_vllm_command(command: Sequence[str]) -> bool:
    """True when ``command`` starts vLLM's OpenAI-compatible server."""
    words = list(command)
    if any(w in VLLM_MODULES for w in words):
        return True
    return bool(words) and os.path.basename(words[0]) == "vllm" and "serve" in words


def interpreter_of(command: Sequence[str]) -> str | None:
    """The Python that runs ``command``: its first word when that is a Python, else the interpreter named by
    the ``#!`` line of the script it names (``vllm`` is a console script); None when unknown."""
    words = resolve_command(command)
    if not words:
        return None
    first = shutil.which(words[0]) or words[0]
    if os.path.basename(first).startswith("python"):
        return first
    try:
        with open(first, "rb") as f:
            head = f.readline(512).decode(errors="replace").strip()
    except OSError:
        return None
    if not head.startswith("#!") or "python" not in head:
        return None
    parts = head[2:].split()
    if os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0]


def cache_dir() -> Path:
    explicit = os.environ.get("TUNER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuner"


def vllm_origin(python: str) -> str | None:
    """Where ``python`` imports vLLM from (its ``__init__.py``), or None when it has no vLLM."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        spec = importlib.util.find_spec("vllm")
        return spec.origin if spec is not None and spec.origin else None
    try:
        proc = subprocess.run(
            [python, "-c", _ORIGIN_SCRIPT], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    origin = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
    return origin[0] if origin and origin[0] else None


def cache_path(python: str, origin: str) -> Path:
    """The cache file of the option list of the vLLM at ``origin`` run by ``python``."""
    try:
        stamp = os.stat(origin).st_mtime_ns
    except OSError:
        stamp = 0
    key = f"{os.path.realpath(python)}\0{os.path.realpath(origin)}\0{stamp}"
    return cache_dir() / f"vllm-flags-{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def known_options(
    command: Sequence[str],
    *,
    timeout_s: float = PARSER_TIMEOUT_S,
    on_build: Callable[[], None] | None = None,
) -> frozenset[str] | None:
    """The long options (``--max-num-seqs``, ``--no-enable-prefix-caching``, ...) vLLM's parser accepts, or
    None when they cannot be known (not vLLM's command, no vLLM, the parser failed). ``on_build`` is called
    before the slow build (not when the cache answers)."""
    if not is_vllm_command(command):
        return None
    python = interpreter_of(command)
    origin = vllm_origin(python) if python else None
    if python is None or origin is None:
        return None
    path = cache_path(python, origin)
    try:
        cached = json.loads(path.read_text())
        if isinstance(cached, dict) and isinstance(cached.get("flags"), list):
            return frozenset(str(f) for f in cached["flags"])
    except (OSError, ValueError):
        pass
    if on_build is not None:
        on_build()
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(
            [python, "-c", _PARSER_SCRIPT, _MARK],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        return None
    try:
        flags = [str(f) for f in json.loads(lines[-1][len(_MARK) :])]
    except ValueError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"python": python, "vllm": origin, "flags": flags}))
        tmp.replace(path)
    except OSError:
        pass  # no cache: the next run builds the parser again
    return frozenset(flags)


def _options(name: str, values: Sequence[object]) -> Iterator[str]:
    """The options tuner passes for flag ``name`` taking any of ``values`` (see :func:`tuner.config.argv.flag_args`)."""
    for v in values:
        if v is None or (isinstance(v, str) and v.lower() == "none"):
            continue
        yield f"--no-{name}" if v is False else f"--{name}"


def used_options(spec: StudySpec, sets: Mapping[str, FlagValue] | None = None) -> list[tuple[str, str]]:
    """``(where, option)`` for every option a trial of ``spec`` may pass (besides model, host and port)."""
    out: list[tuple[str, str]] = []
    for name, value in spec.server.args.items():
        out += [(f"server.args.{name}", o) for o in _options(name, [value])]
    for name, entry in spec.search.items():
        values: list[object] = list(entry.labels()) if isinstance(entry, Choices) else [1]
        out += [(f"search.{name}", o) for o in _options(name, values)]
    if isinstance(spec.baseline, dict):
        base: dict[str, FlagValue] = spec.baseline
        out += [(f"baseline.{name}", o) for name, v in base.items() for o in _options(name, [v])]
    for name, value in (sets or {}).items():
        out += [(f"--set {name}", o) for o in _options(name, [value])]
    if spec.served_model_name:
        out.append(("served_model_name", "--served-model-name"))
    return list(dict.fromkeys(out))


def unknown_options(
    spec: StudySpec, known: frozenset[str], sets: Mapping[str, FlagValue] | None = None
) -> list[str]:
    """One phrase per unknown option: ``search.max-num-seq: --max-num-seq (did you mean --max-num-seqs?)``."""
    out: list[str] = []
    for where, option in used_options(spec, sets):
        if option in known:
            continue
        close = difflib.get_close_matches(option, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{where}: {option}{hint}")
    return out


def check_flags(
    spec: StudySpec,
    sets: Mapping[str, FlagValue] | None = None,
    *,
    on_build: Callable[[], None] | None = None,
    known: frozenset[str] | None = None,
) -> bool:
    """Raise :class:`UsageError` when vLLM's parser does not know a flag the study passes (see the module
    docstring). Returns whether the check ran."""
    if os.environ.get("TUNER_CHECK_VLLM_FLAGS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    options = known if known is not None else known_options(spec.server.command, on_build=on_build)
    if options is None:
        return False
    bad = unknown_options(spec, options, sets)
    if bad:
        noun = "an option" if len(bad) == 1 else "options"
        raise UsageError(f"{spec.source or spec.name}: the installed vLLM has no {noun} " + "; ".join(bad))
    return True


__all__ = [
    "check_flags",
    "interpreter_of",
    "is_vllm_command",
    "known_options",
    "unknown_options",
    "used_options",
]
