"""The search space: the study file's ``search:`` block as Optuna distributions, and the rules that refuse a
configuration before any server starts. Pure: no I/O.

* :func:`distributions` — one Optuna distribution per searched flag, in file order: a float range is a
  ``FloatDistribution`` (``log``/``step`` as given), an int range an ``IntDistribution``, a choice list a
  ``CategoricalDistribution`` over :meth:`tuner.config.spec.Choices.labels` (``"none"`` for "leave vLLM's
  default", a checkpoint's name for a checkpoint choice).
* :func:`suggest` — ask an Optuna trial for one value per searched flag (queued values are honoured by
  Optuna itself); the result maps flag name to the label Optuna stored.
* :func:`prelaunch_violation` — the reason an *effective* flag set (fixed ``server.args`` + the trial's
  params, as :func:`tuner.config.argv.trial_flags` merges them) cannot start, for rules vLLM itself enforces when it
  builds its config, or None. A refused trial costs no server start; it is recorded ``infeasible``.
* :func:`parse_sets` — ``tuner measure --set flag=value`` items as params: any value vLLM takes (vLLM's own
  parser checks it before a server starts); a searched flag's value is held as its search entry holds it (a
  choice's label, an int for an int range). :func:`outside_search` names the values the study would never
  have proposed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.config.spec import (
    Choices,
    FlagValue,
    FloatRange,
    IntRange,
    SearchEntry,
    StudySpec,
    choice_label,
    is_settable_flag,
)
from tuner.errors import UsageError


def distribution(name: str, entry: SearchEntry) -> BaseDistribution:
    """The Optuna distribution of one search entry. Raises :class:`UsageError` for ``log`` with ``step``."""
    if isinstance(entry, FloatRange):
        if entry.log and entry.step is not None:
            raise UsageError(f"search.{name}: a float range cannot have both log and step")
        return FloatDistribution(entry.low, entry.high, log=entry.log, step=entry.step)
    if isinstance(entry, IntRange):
        return IntDistribution(entry.low, entry.high, log=entry.log, step=entry.step)
    assert isinstance(entry, Choices)
    return CategoricalDistribution(entry.labels())


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """``{flag: distribution}`` for every searched flag, in the study file's order."""
    return {name: distribution(name, entry) for name, entry in spec.search.items()}


def suggest_from(trial: optuna.Trial, name: str, d: BaseDistribution) -> Any:
    """Suggest ``name`` on ``trial`` from an Optuna distribution (a space given as distributions, as the
    simulator's studies and the benchmarks have it)."""
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log, step=d.step)
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, log=d.log, step=d.step)
    raise TypeError(f"{name}: unsupported distribution {d!r}")


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, FlagValue]:
    """Suggest every searched flag on ``trial``; returns ``{flag: value or choice label}``."""
    out: dict[str, FlagValue] = {}
    for name, entry in spec.search.items():
        if isinstance(entry, FloatRange):
            out[name] = trial.suggest_float(name, entry.low, entry.high, log=entry.log, step=entry.step)
        elif isinstance(entry, IntRange):
            out[name] = trial.suggest_int(name, entry.low, entry.high, log=entry.log, step=entry.step)
        else:
            out[name] = trial.suggest_categorical(name, entry.labels())
    return out


def prelaunch_violation(flags: Mapping[str, FlagValue]) -> str | None:
    """Why vLLM would refuse these effective flags at start, or None. Only rules that vLLM (0.10-0.32)
    checks in its ``SchedulerConfig`` are applied, and only to values that are given (an absent flag takes a
    default that depends on the platform, so it is not guessed):

    1. ``max-num-batched-tokens < max-model-len`` while ``enable-chunked-prefill`` is False: a prompt as long
       as the context could never be scheduled;
    2. ``max-num-batched-tokens < max-num-seqs``: a step could not give every sequence one token;
    3. ``long-prefill-token-threshold > max-model-len``.
    """
    batched = _int(flags.get("max-num-batched-tokens"))
    model_len = _int(flags.get("max-model-len"))
    seqs = _int(flags.get("max-num-seqs"))
    threshold = _int(flags.get("long-prefill-token-threshold"))
    chunked_off = flags.get("enable-chunked-prefill") is False
    if batched is not None and model_len is not None and batched < model_len and chunked_off:
        return (
            f"max-num-batched-tokens ({batched}) < max-model-len ({model_len}) "
            "with chunked prefill off: long prompts could never be scheduled"
        )
    if batched is not None and seqs is not None and batched < seqs:
        return f"max-num-batched-tokens ({batched}) < max-num-seqs ({seqs})"
    if threshold is not None and model_len is not None and threshold > model_len:
        return f"long-prefill-token-threshold ({threshold}) > max-model-len ({model_len})"
    return None


def _int(value: FlagValue) -> int | None:
    """An integer flag value (ints, integral floats, digit strings), else None (absent or "none")."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def parse_sets(spec: StudySpec, sets: Sequence[str]) -> dict[str, FlagValue]:
    """``["max-num-seqs=64", "block-size=32"]`` -> params. Values are YAML scalars; a searched flag's value
    need not lie in its search entry, but a range's value must be a number (an integer for an int range).
    Raises :class:`UsageError` (one line)."""
    params: dict[str, FlagValue] = {}
    for item in sets:
        name, sep, raw = item.partition("=")
        name = name.strip().removeprefix("--")
        if not sep or not name:
            raise UsageError(f"--set {item!r}: write it as flag=value")
        if not is_settable_flag(name):
            raise UsageError(f"--set {item!r}: {name!r} is not a flag tuner may set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UsageError(f"--set {item!r}: the value is not a YAML scalar") from None
        if isinstance(value, dict | list) or not (
            value is None or isinstance(value, bool | int | float | str)
        ):
            raise UsageError(f"--set {item!r}: the value must be a single number, word or true/false")
        entry = spec.search.get(name)
        if entry is not None:
            value = _check_against(name, item, value, entry)
        params[name] = value
    return params


def _check_against(name: str, item: str, value: FlagValue, entry: SearchEntry) -> FlagValue:
    """``value`` as the search entry of ``name`` holds it (a choice's label, an int for an int range; a
    value that is no choice as it is), or :class:`UsageError` for a range given no number."""
    if isinstance(entry, Choices):
        label = _choice_label(entry, value)
        return value if label is None else label
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"--set {item!r}: {name} needs a number")
    if isinstance(entry, IntRange):
        if isinstance(value, float) and not value.is_integer():
            raise UsageError(f"--set {item!r}: {name} needs an integer")
        value = int(value)
    if not math.isfinite(value):
        raise UsageError(f"--set {item!r}: {name} needs a finite number")
    return float(value) if isinstance(entry, FloatRange) else value


def _choice_label(entry: Choices, value: FlagValue) -> str | int | float | bool | None:
    """The label of ``entry`` that ``value`` names (``None`` for ``"none"``), else None."""
    wanted = "none" if value is None else value
    for label in entry.labels():
        if type(label) is type(wanted) and label == wanted:
            return label
        if isinstance(label, float) and type(wanted) is int and label == wanted:
            return label
    return None


def outside_search(spec: StudySpec, params: Mapping[str, FlagValue]) -> list[str]:
    """One phrase per searched flag whose value in ``params`` the study would never propose:
    ``gpu-memory-utilization=0.9 lies outside the study's search range [0.1, 0.3]``,
    ``block-size=48 is none of the study's choices [16, 32]``."""
    notes = []
    for name, value in params.items():
        entry = spec.search.get(name)
        if isinstance(entry, Choices):
            if _choice_label(entry, value) is None:
                choices = [choice_label(c) for c in entry.choices]
                notes.append(f"{name}={value} is none of the study's choices {choices}")
        elif entry is not None and isinstance(value, int | float) and not entry.low <= value <= entry.high:
            notes.append(f"{name}={value} lies outside the study's search range [{entry.low}, {entry.high}]")
    return notes
