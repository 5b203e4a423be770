"""Learning from answers: a semantic candidate's fresh answer against the cached one.

At finalize, every line that was a `verify` sample or a `candidate` and got its own answer
is compared with the answer of the entry it matched; the outcome becomes a label (entry,
similarity, agreed) in the store, which later lookups learn thresholds from. Answers agree
when they are the same text up to case, spacing and punctuation, or when the rules agree
on them (numbers, dates, negations, entities, quoted strings) and their embeddings are at
least `answer_agreement` alike. (When the quality guard's metrics land, they replace this.)

`pairs` and `texts_to_embed` say which answers a comparison embeds, so that an endpoint's
vectors can be bought as a batch before finalize (run.answer_embed_step); the Verifier then
embeds each batch of rows in one call, and a comparison whose answer has no vector (an
endpoint embedder that only reads the cache answers NaN) is left `unverified`: no label,
nothing bought.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from batchd.cache.base import Cache
from batchd.cache.embedders import Embedder
from batchd.cache.semantic.entries import Label, SemanticStore
from batchd.cache.semantic.guard import rules_agree
from batchd.cache.semantic.matcher import CANDIDATE, VERIFY
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import SUCCEEDED

AGREED, DISAGREED, UNVERIFIED = "agreed", "disagreed", "unverified"
_NOISE = re.compile(r"[\W_]+")


def _norm(text: str) -> str:
    return _NOISE.sub(" ", text.lower()).strip()


def needs_vectors(a: str, b: str) -> bool:
    """Whether comparing answers `a` and `b` takes their embeddings (the texts differ beyond
    case, spacing and punctuation, and the rules agree on them)."""
    return _norm(a) != _norm(b) and rules_agree(a, b)


def answers_agree(
    a: str, b: str, vectors: Mapping[str, np.ndarray], agreement: float
) -> bool | None:
    """`vectors`: the texts' embeddings (NaN: none to be had); None: undecided for want of
    a vector."""
    if _norm(a) == _norm(b):
        return True
    if not rules_agree(a, b):
        return False
    va, vb = vectors.get(a), vectors.get(b)
    if va is None or vb is None or np.isnan(va[0]) or np.isnan(vb[0]):
        return None
    return float(np.dot(va, vb)) >= agreement


def pairs(
    results: Cache,
    checks: Sequence[str | None],
    sources: Sequence[bytes | None],
    statuses: Sequence[str],
    outputs: Sequence[str | None],
) -> list[tuple[int, str, str]]:
    """(row, fresh answer, cached answer) of each row compared: samples and candidates that
    got an answer, whose entry's answer is still in the result cache."""
    todo = [
        i
        for i, c in enumerate(checks)
        if c in (VERIFY, CANDIDATE) and statuses[i] == SUCCEEDED and outputs[i] is not None
    ]
    if not todo:
        return []
    cached = results.get_many(list({sources[i] for i in todo}))  # type: ignore[misc]
    out = []
    for i in todo:
        source = cached.get(sources[i])  # type: ignore[arg-type]
        if source is not None and source.output_text is not None:  # else expired meanwhile
            out.append((i, outputs[i] or "", source.output_text))
    return out


def texts_to_embed(compared: Sequence[tuple[int, str, str]]) -> list[str]:
    """The distinct answers whose embeddings the comparison of `compared` takes, in order
    (also what run.answer_embed_step buys as a batch before finalize)."""
    texts = (t for _, a, b in compared if needs_vectors(a, b) for t in (a, b))
    return list(dict.fromkeys(texts))


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
        self.unverified = 0  # compared rows left undecided: an answer had no vector

    def verdicts(
        self,
        checks: Sequence[str | None],
        sources: Sequence[bytes | None],
        similarities: Sequence[float | None],
        scopes: Sequence[bytes | None],
        statuses: Sequence[str],
        outputs: Sequence[str | None],
    ) -> list[str | None]:
        """One verdict per row (`verify` rows only; None elsewhere); labels recorded. The
        answers to embed are embedded in one call; a row whose answers have no vector (an
        endpoint embedder that only reads the cache) is `unverified`, and no label."""
        out: list[str | None] = [None] * len(checks)
        compared = pairs(self.results, checks, sources, statuses, outputs)
        texts = texts_to_embed(compared)
        vectors = dict(zip(texts, self.embedder.embed(texts), strict=True)) if texts else {}
        labels: dict[bytes, list[Label]] = {}
        for i, fresh, cached_text in compared:
            ok = answers_agree(fresh, cached_text, vectors, self.s.answer_agreement)
            if ok is None:
                self.unverified += 1
                out[i] = UNVERIFIED if checks[i] == VERIFY else None
                continue
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
