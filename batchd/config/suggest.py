"""'Did you mean ...?': the nearest known names to a misspelt one."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Known names closest to `name`, ignoring case (exact case-insensitive matches first)."""
    by_lower: dict[str, str] = {}
    for k in known:
        by_lower.setdefault(k.lower(), k)
    low = name.lower()
    if low in by_lower:
        return [by_lower[low]]
    close = difflib.get_close_matches(low, list(by_lower), n=n, cutoff=0.6)
    if not close:  # a name that is a prefix or part of known ones: gpt-5.4 -> gpt-5.4-mini
        close = [k for k in by_lower if low in k or k in low][:n]
    return [by_lower[c] for c in close]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' Did you mean `a` or `b`?' or '' when nothing is close."""
    found = nearest(name, known)
    if not found:
        return ""
    return " Did you mean " + " or ".join(f"`{f}`" for f in found) + "?"
