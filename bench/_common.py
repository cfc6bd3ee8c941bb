"""What the simulator benchmarks share: the checkout on ``sys.path``, their common options, a process pool.

Imported by each benchmark script before tuner: importing it puts the checkout first on ``sys.path`` (tuner
from this tree) and, unless set, ``OMP_NUM_THREADS=1`` (one thread per pool worker: the grid and the
searches already run on ``--procs`` processes).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

T = TypeVar("T")
R = TypeVar("R")


def common_args(
    description: str, *, seed_base: int, quick: str, seed_base_help: str | None = None
) -> argparse.ArgumentParser:
    """A parser with the options every simulator benchmark takes: ``--seeds`` (20), ``--seed-base``,
    ``--scenarios`` (names; default all), ``--procs`` (default 2, at most the cores) and ``--quick``
    (``quick`` says what it runs)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-base", type=int, default=seed_base, help=seed_base_help)
    ap.add_argument("--scenarios", nargs="*", default=None, help="names (default: all)")
    ap.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--quick", action="store_true", help=quick)
    return ap


def pool_map(fn: Callable[[T], R], tasks: Iterable[T], procs: int, *, chunksize: int = 1) -> list[R]:
    """``fn`` over ``tasks``, in their order: on ``procs`` forked processes (workers see the module state
    set before the call), or in this one when ``procs`` is 1."""
    if procs > 1:
        with mp.get_context("fork").Pool(procs) as pool:
            return list(pool.imap(fn, tasks, chunksize=chunksize))
    return [fn(t) for t in tasks]
