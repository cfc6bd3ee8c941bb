"""GPU placement for parallel trials on one host. Pure: no NVML, no processes, no clock.

Contracts:

* **GPU names** are what ``CUDA_VISIBLE_DEVICES`` takes: indices (``"0"``) or UUIDs (``"GPU-8f…"``,
  ``"MIG-…"``). :func:`parse_gpus` turns ``--gpus all|0,1,2,3|GPU-a,GPU-b`` (or the study file's
  ``resources.gpus``) into the host's GPU list; ``all`` needs the detected devices, given by the caller.
* **Size** of a trial (:func:`trial_size`): ``tensor-parallel-size`` x ``pipeline-parallel-size`` of the
  flags its server gets (each 1 when unset), searchable like any flag.
* **Rules known before launch** (:func:`size_rule`): a size larger than the host's GPUs, a size that does
  not divide the host's GPU count (it would strand GPUs no trial of that size can use), a tensor-parallel
  size the model's attention heads are not divisible by, or more pipeline stages than layers. Each gives
  one line with the reason; the trial is then refused without a server start.
* **Placement** (:class:`Placement`): a trial gets ``size`` free GPUs, the lowest block aligned to its size
  (start a multiple of ``size``) when one is free, else the lowest free GPUs; two running trials never
  share a GPU. Sizes that divide the GPU count and are placed aligned (powers of two on 2, 4 or 8 GPUs)
  never fragment: a free aligned block exists whenever enough GPUs of the right alignment are free.
* **Set aside** (:meth:`Placement.take`): GPUs held busy without a trial (another process filled them);
  :meth:`Placement.release` gives them back.
* **Waiting** is first come, first served: :meth:`Placement.place` returns None when the trial does not fit
  now; the scheduler keeps that trial at the head (asking the sampler for nothing new) until a release
  makes room, so a large trial is never starved by small ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the flags whose product is the number of GPUs one vLLM server uses
TP_FLAG = "tensor-parallel-size"
PP_FLAG = "pipeline-parallel-size"


class PlacementError(ValueError):
    """A GPU list or a trial size that cannot be used (one line, for the user)."""


def parse_gpus(text: str | Sequence[str | int], detected: Sequence[str] = ()) -> tuple[str, ...]:
    """The host's GPUs for parallel trials: ``"all"`` -> ``detected`` (indices or UUIDs of the devices
    found), ``"0,1,2,3"`` / ``"GPU-a,GPU-b"`` / a list -> those names. Raises :class:`PlacementError` for an
    empty list, a repeated GPU, a negative or malformed index, or ``all`` with no GPU detected."""
    if isinstance(text, str):
        if text.strip().lower() == "all":
            if not detected:
                raise PlacementError("--gpus all: no GPU found (give the GPUs, e.g. --gpus 0,1)")
            return tuple(str(d) for d in detected)
        items: list[str] = [p.strip() for p in text.split(",")]
    else:
        items = [str(p).strip() for p in text]
    if not items or any(not p for p in items):
        raise PlacementError(f"gpus {text!r}: give 'all' or a comma-separated list like 0,1,2,3")
    for p in items:
        if not (p.isdigit() or p.upper().startswith(("GPU-", "MIG-"))):
            raise PlacementError(f"gpus: {p!r} is neither a GPU index nor a UUID (GPU-... or MIG-...)")
    if len(set(items)) != len(items):
        raise PlacementError(f"gpus {text!r}: a GPU is named twice")
    return tuple(items)


def _positive(flags: Mapping[str, Any], name: str) -> int:
    value = flags.get(name)
    if value is None:
        return 1
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlacementError(f"{name} {value!r} is not a whole number") from None
    if isinstance(value, bool) or number < 1 or number != int(number):
        raise PlacementError(f"{name} {value!r} is not a positive whole number")
    return int(number)


def trial_size(flags: Mapping[str, Any]) -> int:
    """GPUs one server with these flags uses: tensor-parallel-size x pipeline-parallel-size."""
    return _positive(flags, TP_FLAG) * _positive(flags, PP_FLAG)


def size_rule(
    flags: Mapping[str, Any], n_gpus: int, *, heads: int | None = None, layers: int | None = None
) -> str | None:
    """Why a trial with these flags cannot run on a host of ``n_gpus`` GPUs (``heads``: the model's attention
    heads, ``layers``: its hidden layers, None when unknown), or None when it can."""
    try:
        tp, pp = _positive(flags, TP_FLAG), _positive(flags, PP_FLAG)
    except PlacementError as e:
        return str(e)
    size = tp * pp
    if size > n_gpus:
        return f"{TP_FLAG} {tp} x {PP_FLAG} {pp} needs {size} GPUs; the host has {n_gpus}"
    if n_gpus % size:
        return f"{TP_FLAG} {tp} x {PP_FLAG} {pp} = {size} GPUs does not divide the host's {n_gpus} GPUs"
    if heads is not None and heads % tp:
        return f"{TP_FLAG} {tp} does not divide the model's {heads} attention heads"
    if layers is not None and pp > layers:
        return f"{PP_FLAG} {pp} exceeds the model's {layers} layers"
    return None


@dataclass
class Placement:
    """Which of the host's GPUs are free; :meth:`place` and :meth:`release` move GPUs between trials."""

    gpus: tuple[str, ...]
    _busy: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.gpus:
            raise PlacementError("no GPU to place trials on")

    @property
    def free(self) -> int:
        return len(self.gpus) - len(self._busy)

    def place(self, size: int) -> tuple[str, ...] | None:
        """``size`` free GPUs (now busy), the lowest aligned block first; None when fewer are free.
        Raises :class:`PlacementError` for a size the host can never hold."""
        n = len(self.gpus)
        if size < 1 or size > n:
            raise PlacementError(f"a trial of {size} GPUs cannot run on {n} GPUs")
        if self.free < size:
            return None
        chosen: list[int] | None = None
        for start in range(0, n - size + 1, size):
            block = list(range(start, start + size))
            if not self._busy.intersection(block):
                chosen = block
                break
        if chosen is None:
            chosen = [i for i in range(n) if i not in self._busy][:size]
        self._busy.update(chosen)
        return tuple(self.gpus[i] for i in chosen)

    def take(self, gpus: Sequence[str]) -> bool:
        """Mark these GPUs busy (set aside: no trial is placed on them) when every one is free; whether it
        did. Released with :meth:`release`."""
        idx = [self.gpus.index(g) if g in self.gpus else -1 for g in gpus]
        if not idx or any(i < 0 or i in self._busy for i in idx):
            return False
        self._busy.update(idx)
        return True

    def release(self, gpus: Sequence[str]) -> None:
        """Free GPUs a trial held. Raises :class:`PlacementError` for a GPU that was not busy."""
        idx = [self.gpus.index(g) if g in self.gpus else -1 for g in gpus]
        if any(i not in self._busy for i in idx):
            raise PlacementError(f"release of GPUs {list(gpus)} that were not placed")
        self._busy.difference_update(idx)


__all__ = [
    "PP_FLAG",
    "TP_FLAG",
    "Placement",
    "PlacementError",
    "parse_gpus",
    "size_rule",
    "trial_size",
]
