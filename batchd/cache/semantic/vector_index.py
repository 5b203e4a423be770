"""Vector search per scope with usearch, in bounded memory.

One HNSW index (cosine, vectors kept as float16) per scope, built from the store the first
time a lookup needs that scope and kept for the rest of the ingest; at most `max_vectors`
vectors over all loaded scopes: the least recently used scopes are dropped first, and a
scope larger than the budget keeps its newest entries. usearch was chosen over hnswlib
(no release since 2023, source-only on PyPI) and faiss-cpu (a large wheel, no per-item
removal in HNSW): it ships wheels for every platform, is actively released, and gives
batched multi-threaded search with a small, explicit memory footprint.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from batchd.cache.semantic.entries import Entry, as_matrix


class ScopeIndex:
    def __init__(self, entries: list[Entry], dim: int) -> None:
        from usearch.index import Index

        self.keys = [e.key for e in entries]
        self.texts = [e.text for e in entries]
        self.index = Index(ndim=dim, metric="cos", dtype="f16")
        if entries:
            self.index.add(np.arange(len(entries), dtype=np.uint64), as_matrix(entries, dim))

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Per query: (entry position, cosine similarity), best first."""
        if not self.keys or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        k = min(k, len(self.keys))
        found = self.index.search(vectors, k)
        keys = np.atleast_2d(found.keys)
        dist = np.atleast_2d(found.distances)
        counts = np.atleast_1d(getattr(found, "counts", len(found)))
        return [
            [(int(keys[i, j]), 1.0 - float(dist[i, j])) for j in range(int(counts[i]))]
            for i in range(len(vectors))
        ]


class IndexPool:
    """Scope indexes, loaded on demand, at most `max_vectors` vectors in all."""

    def __init__(self, load: Callable[[bytes, int], list[Entry]], dim: int, max_vectors: int):
        self._load = load
        self._dim = dim
        self._max = max_vectors
        self._scopes: OrderedDict[bytes, ScopeIndex] = OrderedDict()
        self._size = 0

    def get(self, scope: bytes) -> ScopeIndex:
        idx = self._scopes.get(scope)
        if idx is not None:
            self._scopes.move_to_end(scope)
            return idx
        idx = ScopeIndex(self._load(scope, self._max), self._dim)
        self._scopes[scope] = idx
        self._size += len(idx)
        while self._size > self._max and len(self._scopes) > 1:
            _, old = self._scopes.popitem(last=False)
            self._size -= len(old)
        return idx

    @property
    def vectors(self) -> int:
        return self._size
