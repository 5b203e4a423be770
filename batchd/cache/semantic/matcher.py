"""The semantic cache of one ingest: near-duplicate lookups under the guard.

`lookup(queries)` embeds the queries' texts (one batch), searches their scopes' indexes,
and for each query returns the best candidate: a `hit` (served from the cache), a `verify`
(would be served, but sampled: sent to the model too and compared, `verify_share`), or a
`candidate` (not served; sent anyway, and its answer compared for learning). `remember`
stores the queries that were sent, with their vectors, as entries for later runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from batchd.cache.base import Cache
from batchd.cache.embedders import Embedder, open_embedder
from batchd.cache.semantic.entries import Entry, SemanticStore
from batchd.cache.semantic.guard import Guard, rules_agree
from batchd.cache.semantic.scope import SemanticPlan
from batchd.cache.semantic.vector_index import IndexPool
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import Outcome
from batchd.requests import KEY_BYTES

HIT, VERIFY, CANDIDATE = "hit", "verify", "candidate"
NEIGHBOURS = 4  # candidates looked at per query, best first


@dataclass(frozen=True)
class Query:
    key: bytes
    scope: bytes  # semantic_scope.scope_and_text
    text: str


@dataclass(frozen=True)
class Match:
    source_key: bytes  # the cached entry's request key
    similarity: float
    kind: str  # hit | verify | candidate
    scope: bytes  # the store's scope (the request scope and the embedder)
    outcome: Outcome | None  # the cached answer (hit, verify)


def store_scope(scope: bytes, embedder: str) -> bytes:
    """Vectors of different embedding models never meet: the model is part of the scope."""
    return hashlib.blake2b(scope + b"\x00" + embedder.encode(), digest_size=KEY_BYTES).digest()


def sampled(key: bytes, salt: str, share: float) -> bool:
    """A deterministic share of keys (per run salt)."""
    h = hashlib.blake2b(key + salt.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") < share * 2**64


class SemanticCache:
    def __init__(
        self,
        settings: SemanticSettings,
        store: SemanticStore,
        results: Cache,
        plan: SemanticPlan,
        embedder: Embedder | None = None,
        salt: str = "",
    ) -> None:
        """`salt` (the run id) picks the verification sample."""
        self.s = settings
        self.plan = plan
        self.store = store
        self.results = results
        self.embedder = embedder or open_embedder(settings.embedding)
        self.guard = Guard(settings)
        self.salt = salt
        self.pool = IndexPool(self._entries, self.embedder.dim, settings.max_index_vectors)
        self._labels: dict[bytes, tuple[list[tuple[float, bool]], dict[bytes, list]]] = {}

    def _entries(self, scope: bytes, limit: int) -> list[Entry]:
        return self.store.entries(scope, limit)

    def _scope_labels(self, scope: bytes) -> tuple[list[tuple[float, bool]], dict[bytes, list]]:
        got = self._labels.get(scope)
        if got is None:
            pooled: list[tuple[float, bool]] = []
            per_entry: dict[bytes, list[tuple[float, bool]]] = {}
            for lb in self.store.labels(scope):
                pooled.append((lb.similarity, lb.ok))
                per_entry.setdefault(lb.entry_key, []).append((lb.similarity, lb.ok))
            got = self._labels[scope] = (pooled, per_entry)
        return got

    def lookup(self, queries: Sequence[Query]) -> tuple[dict[bytes, Match], np.ndarray]:
        """Matches by query key (queries with no candidate are left out), and every query's
        vector (in order)."""
        vectors = self.embedder.embed([q.text for q in queries])
        by_scope: dict[bytes, list[int]] = {}
        for i, q in enumerate(queries):
            by_scope.setdefault(store_scope(q.scope, self.embedder.name), []).append(i)
        found: dict[int, list[tuple[bytes, str, float]]] = {}
        for scope, rows in by_scope.items():
            idx = self.pool.get(scope)
            for i, near in zip(rows, idx.search(vectors[rows], NEIGHBOURS), strict=True):
                found[i] = [
                    (idx.keys[p], idx.texts[p], sim)
                    for p, sim in near
                    if sim >= self.s.min_similarity and idx.keys[p] != queries[i].key
                ]
        answers = self.results.get_many(list({k for c in found.values() for k, _, _ in c}))
        matches: dict[bytes, Match] = {}
        for scope, rows in by_scope.items():
            pooled, per_entry = self._scope_labels(scope)
            for i in rows:
                m = self._decide(queries[i], found.get(i, []), answers, scope, pooled, per_entry)
                if m is not None:
                    matches[queries[i].key] = m
        return matches, vectors

    def _decide(
        self,
        q: Query,
        candidates: list[tuple[bytes, str, float]],
        answers: dict[bytes, Outcome],
        scope: bytes,
        pooled: list[tuple[float, bool]],
        per_entry: dict[bytes, list],
    ) -> Match | None:
        fallback: Match | None = None
        for key, text, sim in candidates:
            answer = answers.get(key)
            if answer is None:  # expired, or its request never succeeded
                continue
            t = self.guard.threshold(pooled, per_entry.get(key, ()))
            if self.guard.serve(sim, t, q.text, text):
                kind = VERIFY if sampled(q.key, self.salt, self.s.verify_share) else HIT
                return Match(key, sim, kind, scope, answer)
            if fallback is None and rules_agree(q.text, text):
                fallback = Match(key, sim, CANDIDATE, scope, None)  # labelled at finalize
        return fallback

    def remember(self, queries: Sequence[Query], vectors: np.ndarray) -> None:
        """Store sent queries as entries (their answers arrive in the result cache later)."""
        by_scope: dict[bytes, list[Entry]] = {}
        for q, v in zip(queries, vectors, strict=True):
            scope = store_scope(q.scope, self.embedder.name)
            by_scope.setdefault(scope, []).append(Entry(q.key, q.text, v.tobytes()))
        for scope, entries in by_scope.items():
            self.store.add_entries(scope, entries)
