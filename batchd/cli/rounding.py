"""Rounding for display so that the parts shown add up to the total shown."""

from __future__ import annotations

import math
from collections.abc import Sequence


def round_parts(values: Sequence[float], decimals: int) -> list[float]:
    """Round each value to `decimals` so that they sum to the rounded sum (largest remainder).

    Each part moves by less than one unit of the last shown digit, so a table whose rows are
    rounded this way has rows that add up to its rounded total.
    """
    if not values:
        return []
    scale = 10**decimals
    scaled = [v * scale for v in values]
    target = round(sum(scaled))
    floors = [math.floor(s) for s in scaled]
    short = target - sum(floors)
    order = sorted(range(len(values)), key=lambda i: scaled[i] - floors[i], reverse=True)
    if short >= 0:
        for i in order[:short]:
            floors[i] += 1
    else:  # cannot happen for finite values, kept for safety
        for i in order[::-1][:-short]:
            floors[i] -= 1
    return [f / scale for f in floors]


def money(values: Sequence[float], decimals: int = 4) -> tuple[list[str], str]:
    """Shown parts and shown total, e.g. (["0.0012", "0.0034"], "0.0046")."""
    parts = round_parts(values, decimals)
    return [f"{p:,.{decimals}f}" for p in parts], f"{sum(parts):,.{decimals}f}"
