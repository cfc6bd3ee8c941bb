"""What several commands need: the study a study file names, opened read-only, and the checks of a study
about to start servers (:func:`preflight`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from tuner.cli.output import Console
from tuner.config.paths import check_models, default_storage
from tuner.config.spec import FlagValue, StudySpec
from tuner.errors import UsageError
from tuner.server.env import api_key


def load_study(spec: StudySpec, storage: str | None) -> Any:
    """The study of ``spec`` in ``storage`` (default: the study file's), opened without creating anything.
    Raises :class:`UsageError` when there is no such study, :class:`tuner.errors.StorageError` when the
    storage cannot be read."""
    import optuna

    from tuner.search.storage import open_storage, storage_errors

    url = storage or default_storage(spec)
    st = open_storage(url, create=False)
    with storage_errors(url):
        try:
            return optuna.load_study(study_name=spec.name, storage=st)
        except KeyError:
            raise UsageError(f"no study named {spec.name!r} in {url}: start it with `tuner run`") from None


def preflight(
    spec: StudySpec,
    console: Console,
    sets: Mapping[str, FlagValue] | None = None,
    *,
    servers: bool = True,
) -> None:
    """Checks of a study before anything is written: model folders and the storage URL; with ``servers``
    also the flags against the installed vLLM's parser (:mod:`tuner.server.vllm_args`), and a loud word on a
    non-loopback host. Raises :class:`UsageError` (one line)."""
    from tuner.server.vllm_args import check_flags

    check_models(spec)
    if spec.storage is not None:
        from tuner.search.storage import parse_url

        parse_url(spec.storage)  # measure stores nothing, but a bad study file is bad input everywhere
    if not servers:
        return
    check_flags(
        spec,
        sets,
        on_build=lambda: console.info(
            "checking the study's flags against vLLM's own argument parser (once per vLLM install) ..."
        ),
    )
    host = spec.server.host
    if not is_loopback(host):
        guarded = api_key(spec.server.args, spec.server.env) is not None
        console.warn(
            f"server.host is {host}: every vLLM server this study starts listens on {host}, reachable from "
            "other machines" + ("" if guarded else ", with no API key (anyone who reaches it can use it)")
        )


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.1``, ``::1``, ``[::1]``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
