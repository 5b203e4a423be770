"""The semantic cache of one ingest: near-duplicate lookups under the guard.

`lookup(queries)` loads the queries' scopes, embeds the distinct texts of the queries whose
scope has entries (one batch; the others are not embedded at all), searches each scope once
with all its queries, and for each query returns the best candidate: a `hit` (served from
the cache), a `verify` (would be served, but sampled: sent to the model too and compared,
`verify_share`), or a `candidate` (not served; sent anyway, and its answer compared for
learning). `remember`
stores the queries that were sent, with their vectors where they have one, as entries for
later runs. Thresholds are computed once per scope (and per labelled entry) and run.

An embedder may answer a NaN row for a text it has no vector for (an endpoint embedder that
only reads the cache, backends.openai_embedder): such a query is not matched and is
remembered without a vector; such an entry stays unmatched and is not given a vector.
`read_only` (a run's embedding pre-pass, run.embed_step) writes nothing to the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from batchd.cache.base import Cache
from batchd.cache.embedders import Embedder, open_embedder
from batchd.cache.semantic.entries import NO_VECTOR, Entry, ScopeRows, SemanticStore
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
        read_only: bool = False,
    ) -> None:
        """`salt` (the run id) picks the verification sample."""
        self.read_only = read_only
        self.s = settings
        self.plan = plan
        self.store = store
        self.results = results
        self.embedder = embedder or open_embedder(settings.embedding)
        self.guard = Guard(settings)
        self.salt = salt
        self.pool = IndexPool(self._rows, settings.max_index_vectors)
        self._labels: dict[bytes, tuple[list[tuple[float, bool]], dict[bytes, list]]] = {}
        self._thresholds: dict[tuple[bytes, bytes], float] = {}  # labels are fixed per run

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Each distinct text embedded once (the embedder batches and sorts by length)."""
        distinct = list(dict.fromkeys(texts))
        vectors = self.embedder.embed(distinct)
        if len(distinct) == len(texts):
            return vectors
        at = {t: i for i, t in enumerate(distinct)}
        return vectors[[at[t] for t in texts]]

    def _rows(self, scope: bytes, limit: int) -> ScopeRows:
        """A scope's entries; those stored without a vector are embedded now, once."""
        rows = self.store.load(scope, limit, self.embedder.dim)
        todo = np.flatnonzero(rows.missing)
        if len(todo):
            vectors = self._embed([rows.texts[i] for i in todo])
            got = ~np.isnan(vectors[:, 0])  # NaN: no vector to be had (left zero, unmatched)
            todo, vectors = todo[got], vectors[got]
            rows.vectors[todo] = vectors
            if len(todo) and not self.read_only:
                self.store.set_vectors(scope, [rows.keys[i] for i in todo], vectors)
        return rows

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

    def _threshold(self, scope: bytes, key: bytes) -> float:
        pooled, per_entry = self._scope_labels(scope)
        own = per_entry.get(key)
        memo = (scope, key if own else b"")  # entries with no labels share the scope's
        t = self._thresholds.get(memo)
        if t is None:
            t = self._thresholds[memo] = self.guard.threshold(pooled, own or ())
        return t

    def lookup(self, queries: Sequence[Query]) -> tuple[dict[bytes, Match], np.ndarray]:
        """Matches by query key (queries with no candidate are left out), and every query's
        vector (in order; NaN rows for queries whose scope has no entries: not embedded)."""
        by_scope: dict[bytes, list[int]] = {}
        for i, q in enumerate(queries):
            by_scope.setdefault(store_scope(q.scope, self.embedder.name), []).append(i)
        vectors = np.full((len(queries), self.embedder.dim), np.nan, dtype=np.float32)
        live = [(sc, rows, self.pool.get(sc)) for sc, rows in by_scope.items()]
        live = [(sc, rows, idx) for sc, rows, idx in live if len(idx)]
        need = [i for _, rows, _ in live for i in rows]
        if need:
            vectors[need] = self._embed([queries[i].text for i in need])
        found: dict[int, list[tuple[bytes, str, float]]] = {}
        for _, scope_rows, idx in live:
            rows = [i for i in scope_rows if not np.isnan(vectors[i, 0])]  # NaN: no vector
            pos, sims = idx.search(vectors[rows], NEIGHBOURS)
            near = (pos >= 0) & (sims >= self.s.min_similarity)
            for r in np.flatnonzero(near.any(axis=1)):
                i = rows[r]
                got = [
                    (idx.keys[p], idx.texts[p], float(sim))
                    for p, sim, ok in zip(pos[r].tolist(), sims[r].tolist(), near[r], strict=True)
                    if ok and idx.keys[p] != queries[i].key
                ]
                if got:
                    found[i] = got
        answers = self.results.get_many(list({k for c in found.values() for k, _, _ in c}))
        matches: dict[bytes, Match] = {}
        for scope, rows, _ in live:
            for i in rows:
                if i in found:
                    m = self._decide(queries[i], found[i], answers, scope)
                    if m is not None:
                        matches[queries[i].key] = m
        return matches, vectors

    def _decide(
        self,
        q: Query,
        candidates: list[tuple[bytes, str, float]],
        answers: dict[bytes, Outcome],
        scope: bytes,
    ) -> Match | None:
        fallback: Match | None = None
        for key, text, sim in candidates:
            answer = answers.get(key)
            if answer is None:  # expired, or its request never succeeded
                continue
            t = self._threshold(scope, key)
            if self.guard.serve(sim, t, q.text, text):
                kind = VERIFY if sampled(q.key, self.salt, self.s.verify_share) else HIT
                return Match(key, sim, kind, scope, answer)
            if fallback is None and rules_agree(q.text, text):
                fallback = Match(key, sim, CANDIDATE, scope, None)  # labelled at finalize
        return fallback

    def remember(self, queries: Sequence[Query], vectors: np.ndarray) -> None:
        """Store sent queries as entries (their answers arrive in the result cache later);
        one not embedded (a NaN row) is stored without a vector, embedded when needed."""
        if self.read_only:
            return
        by_scope: dict[bytes, list[Entry]] = {}
        embedded = ~np.isnan(vectors[:, 0]) if len(vectors) else np.zeros(0, dtype=bool)
        for q, v, ok in zip(queries, vectors, embedded, strict=True):
            scope = store_scope(q.scope, self.embedder.name)
            vector = v.tobytes() if ok else NO_VECTOR
            by_scope.setdefault(scope, []).append(Entry(q.key, q.text, vector))
        for scope, entries in by_scope.items():
            self.store.add_entries(scope, entries)
