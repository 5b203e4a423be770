"""The judge metric's verdicts, parsed strictly.

A verdict counts only when the judge's whole answer, less surrounding whitespace, is one of:
- the word YES or NO (any letter case), nothing else: no punctuation, no explanation;
- a JSON object with exactly one key, "verdict", whose value is "yes" or "no" (any case).
Anything else is unparsable: counted apart (quality.parquet `unparsable_verdicts`), never
guessed at, and never an exception.
"""

from __future__ import annotations

import json

WORDS = {"yes": True, "no": False}


def parse_verdict(text: str | None) -> bool | None:
    """True (as good), False (not as good), or None (unparsable)."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    word = WORDS.get(stripped.lower()) if stripped.isascii() else None
    if word is not None:
        return word
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or list(value) != ["verdict"]:
        return None
    verdict = value["verdict"]
    return WORDS.get(verdict.lower()) if isinstance(verdict, str) and verdict.isascii() else None
