"""How figures are written for people (tables, one-line summaries)."""

from __future__ import annotations

import math


def fmt_num(v: float) -> str:
    """Whole numbers and figures >= 100 without decimals (``16384``, ``4504``, ``527``), else 3 significant
    digits (``0.7``, ``9.85``, ``36``)."""
    if isinstance(v, int) or (math.isfinite(v) and abs(v) >= 100):
        return f"{v:.0f}"
    return f"{v:.3g}"
