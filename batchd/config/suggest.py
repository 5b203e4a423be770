"""'Did you mean ...?': the nearest known names to a misspelt one."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6  # similarity below this is no suggestion
TIE = 0.05  # names this close to the best one are suggested too


def nearest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Known names closest to `name`, ignoring case (an exact case-insensitive match alone)."""
    by_lower: dict[str, str] = {}
    for k in known:
        by_lower.setdefault(k.lower(), k)
    low = name.lower()
    if low in by_lower:
        return [by_lower[low]]
    scored = sorted(
        ((difflib.SequenceMatcher(None, low, k).ratio(), k) for k in by_lower), reverse=True
    )
    if scored and scored[0][0] >= CUTOFF:
        best = scored[0][0]
        return [by_lower[k] for r, k in scored[:n] if r >= best - TIE]
    # a name that is part of known ones: gpt-5.4 -> gpt-5.4-mini
    return [by_lower[k] for k in by_lower if low in k or k in low][:n]


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """' Did you mean `a` or `b`?' or '' when nothing is close; `prefix` is shown before
    each suggestion but not compared (e.g. a settings section)."""
    found = nearest(name, known)
    if not found:
        return ""
    return " Did you mean " + " or ".join(f"`{prefix}{f}`" for f in found) + "?"
