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
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.config.argv import Param
from tuner.config.spec import Choices, FlagValue, FloatRange, IntRange, SearchEntry, StudySpec
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


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Param]:
    """Suggest every searched flag on ``trial``; returns ``{flag: value or choice label}``."""
    out: dict[str, Param] = {}
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
