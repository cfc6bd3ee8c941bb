"""How figures are written for people (tables, one-line summaries)."""

from __future__ import annotations

import math


def fmt_num(v: float) -> str:
    """Whole numbers and figures >= 1000 without an exponent (``16384``, ``14221``), else 4 significant
    digits (``0.85``, ``36.04``)."""
    if isinstance(v, int) or (math.isfinite(v) and abs(v) >= 1000):
        return f"{v:.0f}"
    return f"{v:.4g}"
