"""The guard of the semantic cache: rules that must agree, learned thresholds, Wilson bounds.

- `rules_agree(a, b)`: numbers, dates, negations, named entities and quoted strings must be
  identical in both texts; a near-miss ("refund order 1234" / "refund order 1243") fails.
- `strict_agree(a, b)`: the rules, and the same content words (for the borderline band).
- `learned_threshold(labels, max_error_rate, z)`: the lowest similarity t such that the
  Wilson upper bound of the false-hit rate among labelled candidates at or above t stays
  within the bound; None while the labels cannot show it (thin data).
- `Guard.threshold(scope_labels, entry_labels)`: per entry once it has enough labels, per
  scope before that, the prior threshold while even the scope's data is thin; never at or
  below a similarity where this entry already gave a wrong answer.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from batchd.config.cache_settings import SemanticSettings

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?")
_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday "
    "saturday sunday today tomorrow yesterday tonight"
)
_DATE_WORDS = frozenset(_MONTHS.split())
_NUMERALS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion half double twice first second third "
    "fourth fifth sixth seventh eighth ninth tenth once"
)
_NUMBER_WORDS = frozenset(_NUMERALS.split())
_NEG_WORDS = (
    "not no never none nothing nobody neither nor without cannot isn't aren't wasn't weren't "
    "don't doesn't didn't won't wouldn't can't couldn't shouldn't hasn't haven't hadn't "
    "mustn't except exclude excluding"
)
_NEGATIONS = frozenset(_NEG_WORDS.split())
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|`([^`]+)`|(?<!\w)'([^']+)'(?!\w)")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+")
_STOP_WORDS = (
    "a an the of to in on at for by with from about as into is are was were be been being am "
    "do does did can could would should will shall may might must i me my you your we our it "
    "its this that these those what which who whom whose how why when where please tell me "
    "give show explain describe there here and or so if than then just also any some"
)
_STOP = frozenset(_STOP_WORDS.split())


def _entities(text: str) -> frozenset[str]:
    """Capitalised words not at a sentence start, and all-caps tokens (SKUs, acronyms)."""
    out = set()
    for m in re.finditer(r"[A-Za-z][\w'’-]*", text):
        word = m.group(0)
        if len(word) == 1 or word.lower() in _STOP:  # "I", "What", "The" ...
            continue
        before = text[: m.start()].rstrip()
        sentence_start = not before or before[-1] in ".!?:\n\"'“("
        if (word[0].isupper() and not sentence_start) or (word.isupper() and len(word) > 1):
            out.add(word.lower())
    return frozenset(out)


@dataclass(frozen=True)
class Facts:
    numbers: frozenset[str]
    dates: frozenset[str]
    negations: frozenset[str]
    entities: frozenset[str]
    quoted: frozenset[str]


@functools.lru_cache(maxsize=65_536)  # cached entries' texts are checked again and again
def facts(text: str) -> Facts:
    words = [w.lower().replace("’", "'") for w in _WORD.findall(text)]
    numbers = frozenset(n.replace(",", "") for n in _NUMBER.findall(text)) | {
        w for w in words if w in _NUMBER_WORDS
    }
    negs = {w for w in words if w in _NEGATIONS or w.endswith("n't")}
    quoted = frozenset(next(g for g in m.groups() if g) for m in _QUOTED.finditer(text))
    return Facts(
        numbers,
        frozenset(w for w in words if w in _DATE_WORDS),
        frozenset({"not"} if negs else set()),  # any negation counts the same
        _entities(text),
        quoted,
    )


def rules_agree(a: str, b: str) -> bool:
    return facts(a) == facts(b)


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in (x.lower() for x in _WORD.findall(text)) if w not in _STOP)


def strict_agree(a: str, b: str) -> bool:
    """Rules agree and the texts use the same content words (word order, stop words free)."""
    return rules_agree(a, b) and content_words(a) == content_words(b)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def learned_threshold(
    labels: Sequence[tuple[float, bool]], max_error_rate: float, z: float
) -> float | None:
    """Lowest similarity t with Wilson upper bound of P(wrong | sim >= t) <= max_error_rate."""
    ranked = sorted(labels, key=lambda sl: -sl[0])
    best: float | None = None
    wrong = 0
    for n, (sim, ok) in enumerate(ranked, start=1):
        wrong += not ok
        if n < len(ranked) and ranked[n][0] == sim:
            continue  # ties: decide after the last label at this similarity
        if wilson(wrong, n, z)[1] <= max_error_rate:
            best = sim
    return best


class Guard:
    """Decisions on semantic candidates under one [cache.semantic] setting."""

    def __init__(self, s: SemanticSettings) -> None:
        self.s = s

    def threshold(
        self, scope_labels: Sequence[tuple[float, bool]], entry_labels: Sequence[tuple[float, bool]]
    ) -> float:
        s = self.s
        t = None
        if len(entry_labels) >= s.entry_min_labels:
            t = learned_threshold(entry_labels, s.max_error_rate, s.confidence_z)
        if t is None:
            t = learned_threshold(scope_labels, s.max_error_rate, s.confidence_z)
        if t is None:
            t = s.prior_threshold
        worst = max((sim for sim, ok in entry_labels if not ok), default=None)
        if worst is not None:
            t = max(t, math.nextafter(worst, 2.0))
        return max(t, s.min_similarity)

    def serve(self, similarity: float, threshold: float, query: str, source: str) -> bool:
        """Above the threshold the rules must agree; in the band below it, strictly."""
        if similarity >= threshold:
            return rules_agree(query, source)
        if similarity >= threshold - self.s.band:
            return strict_agree(query, source)
        return False
