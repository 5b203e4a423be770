"""Learning from answers: a semantic candidate's fresh answer against the cached one.

At finalize, every line that was a `verify` sample or a `candidate` and got its own answer
is compared with the answer of the entry it matched; the outcome becomes a label (entry,
similarity, agreed) in the store, which later lookups learn thresholds from. Answers agree
when they are the same text up to case, spacing and punctuation, or when the rules agree
on them (numbers, dates, negations, entities, quoted strings) and their embeddings are at
least `answer_agreement` alike. (When the quality guard's metrics land, they replace this.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from batchd.cache.base import Cache
from batchd.cache.embedders import Embedder
from batchd.cache.semantic.entries import Label, SemanticStore
from batchd.cache.semantic.guard import rules_agree
from batchd.cache.semantic.matcher import CANDIDATE, VERIFY
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import SUCCEEDED

AGREED, DISAGREED = "agreed", "disagreed"
_NOISE = re.compile(r"[\W_]+")


def _norm(text: str) -> str:
    return _NOISE.sub(" ", text.lower()).strip()


def answers_agree(a: str, b: str, embedder: Embedder, agreement: float) -> bool:
    if _norm(a) == _norm(b):
        return True
    if not rules_agree(a, b):
        return False
    va, vb = embedder.embed([a, b])
    return float(np.dot(va, vb)) >= agreement


class Verifier:
    def __init__(
        self, settings: SemanticSettings, store: SemanticStore, results: Cache, embedder: Embedder
    ) -> None:
        self.s = settings
        self.store = store
        self.results = results
        self.embedder = embedder
        self.verified = 0
        self.false_hits = 0
        self.labels = 0

    def verdicts(
        self,
        checks: Sequence[str | None],
        sources: Sequence[bytes | None],
        similarities: Sequence[float | None],
        scopes: Sequence[bytes | None],
        statuses: Sequence[str],
        outputs: Sequence[str | None],
    ) -> list[str | None]:
        """One verdict per row (`verify` rows only; None elsewhere); labels recorded."""
        todo = [
            i
            for i, c in enumerate(checks)
            if c in (VERIFY, CANDIDATE) and statuses[i] == SUCCEEDED and outputs[i] is not None
        ]
        out: list[str | None] = [None] * len(checks)
        if not todo:
            return out
        cached = self.results.get_many(list({sources[i] for i in todo}))  # type: ignore[misc]
        labels: dict[bytes, list[Label]] = {}
        for i in todo:
            source = cached.get(sources[i])  # type: ignore[arg-type]
            if source is None or source.output_text is None:
                continue  # the entry expired meanwhile: nothing to compare with
            fresh = outputs[i] or ""
            ok = answers_agree(fresh, source.output_text, self.embedder, self.s.answer_agreement)
            labels.setdefault(scopes[i], []).append(  # type: ignore[arg-type]
                Label(sources[i], float(similarities[i]), ok)  # type: ignore[arg-type]
            )
            if checks[i] == VERIFY:
                out[i] = AGREED if ok else DISAGREED
                self.verified += 1
                self.false_hits += not ok
        for scope, group in labels.items():
            self.store.add_labels(scope, group, self.s.labels_per_scope)
            self.labels += len(group)
        return out
