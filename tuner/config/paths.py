"""Where a study's files are: the folder its relative paths start from (a path it names is looked for beside
the study file, else in the working directory: :func:`search_paths`), its model folders and traffic files,
its storage URL and its per-trial logs. Reads the file system (existence and permissions only); writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuner.config.spec import Checkpoint, Choices, StudySpec
from tuner.errors import SpecError


def study_dir(spec: StudySpec) -> Path:
    """The folder relative paths in the study file are resolved against."""
    return Path(spec.source).resolve().parent if spec.source and spec.source != "<study>" else Path.cwd()


def search_paths(name: str, base_dir: Path | None) -> list[Path]:
    """Where a path the study file names is looked for, in order: beside ``base_dir`` (the study file's
    folder; None: none), then in the working directory; an absolute or ``~`` path is itself."""
    p = Path(name).expanduser()
    return [p] if p.is_absolute() else [b / p for b in (base_dir, Path.cwd()) if b is not None]


def resolve_file(name: str, base_dir: Path | None) -> Path:
    """The file ``name`` (:func:`search_paths`: beside ``base_dir``, else in the working directory), made
    absolute; a missing file is a one-line :class:`SpecError`."""
    bases = search_paths(name, base_dir)
    for cand in bases:
        if cand.is_file():
            return cand.resolve()
    where = " and ".join(str(b.parent) for b in bases)
    raise SpecError(name, "", f"no such file (looked in {where})")


def resolve_model(spec: StudySpec, model: str | None = None) -> str:
    """A local folder is made absolute: looked up as :func:`search_paths` says (beside the study file
    first, then in the working directory). Anything else (a hub name such as
    ``meta-llama/Llama-3.1-8B-Instruct``) is unchanged."""
    m = model or spec.model
    for cand in search_paths(m, study_dir(spec)):
        if _exists(cand):
            return str(cand.resolve())
    if m.startswith(("./", "../", "/", "~")):
        # a path that does not exist: preflight says so
        return str((study_dir(spec) / Path(m).expanduser()).resolve())
    return m


def _model_paths(spec: StudySpec) -> list[tuple[str, str, Path]]:
    """``(key, as written, resolved path)`` of each model given as a path (``./``, ``../``, ``/``, ``~``):
    the study's and every checkpoint choice's."""
    wanted: list[tuple[str, str]] = [("model", spec.model)]
    for k, entry in spec.search.items():
        if isinstance(entry, Choices):
            wanted += [(f"search.{k}", c.model) for c in entry.choices if isinstance(c, Checkpoint)]
    return [
        (key, m, Path(resolve_model(spec, m))) for key, m in wanted if m.startswith(("./", "../", "/", "~"))
    ]


def check_model_access(spec: StudySpec) -> None:
    """Refuse a model folder this user may not read (it, or a folder above it, lacks the permission).
    Raises :class:`SpecError` (one line); a folder that does not exist is not this check's."""
    for key, m, path in _model_paths(spec):
        try:
            readable = not path.is_dir() or os.access(path, os.R_OK | os.X_OK)
        except PermissionError:
            readable = False
        if not readable:
            raise SpecError(
                spec.source or "<study>",
                key,
                f"model folder {m}: permission denied (give a user who can read it)",
            )


def check_models(spec: StudySpec) -> None:
    """Refuse a model given as a path (``./``, ``../``, ``/``, ``~``) that is not a folder or cannot be read,
    for the study's model and every checkpoint choice. Raises :class:`SpecError` (one line). Hub names are
    not checked."""
    source = spec.source or "<study>"
    check_model_access(spec)
    for key, m, path in _model_paths(spec):
        if not _exists(path):
            where = f"{study_dir(spec)} and {Path.cwd()}" if not Path(m).expanduser().is_absolute() else ""
            raise SpecError(
                source, key, f"model folder {m} does not exist" + (f" (looked in {where})" if where else "")
            )
        if not path.is_dir():
            raise SpecError(source, key, f"model {m} is a file; give the model's folder")


def _exists(path: Path) -> bool:
    """``path.exists()``, but an unreadable parent folder counts as "it is there" (so that
    :func:`check_models` can say permission denied) instead of raising ``PermissionError``."""
    try:
        return path.exists()
    except PermissionError:
        return True


def default_storage(spec: StudySpec) -> str:
    """The storage URL: the file's ``storage`` (a relative sqlite path is taken from the working directory,
    as SQLAlchemy reads it, and made absolute), else ``sqlite:///<study dir>/<name>.db``."""
    if spec.storage is None:
        return f"sqlite:///{study_dir(spec) / (spec.name + '.db')}"
    url = spec.storage
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            return f"sqlite:///{(Path.cwd() / rel).resolve()}"
    return url


def runs_dir(spec: StudySpec) -> Path:
    """Where per-trial server logs go."""
    if spec.results_dir:
        return (study_dir(spec) / spec.results_dir).resolve()
    return study_dir(spec) / f"{spec.name}.runs"
