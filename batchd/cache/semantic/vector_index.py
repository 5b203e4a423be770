"""Vector search per scope: numpy for small scopes, usearch (HNSW) for large ones.

A scope's entries are loaded in one read (entries.ScopeRows) the first time a lookup needs
that scope and kept for the rest of the ingest; at most `max_vectors` vectors over all
loaded scopes: the least recently used scopes are dropped first, and a scope larger than
the budget keeps its newest entries. A scope of up to `BRUTE_MAX` vectors is searched
exactly with one matrix product per batch of queries (faster than building a graph); a
larger one gets a usearch HNSW index (cosine, vectors kept as float16), filled with one
multi-threaded `add` and searched with one multi-threaded `search` per batch. usearch was
chosen over hnswlib (no release since 2023, source-only on PyPI) and faiss-cpu (a large
wheel, no per-item removal in HNSW): it ships wheels for every platform, is actively
released, and gives batched multi-threaded search with a small, explicit memory footprint.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from batchd.cache.semantic.entries import ScopeRows

BRUTE_MAX = 2048  # vectors: up to this, an exact matrix product beats building a graph
EXPANSION_ADD, EXPANSION_SEARCH = 64, 32  # usearch's 128/64 cost 3x for no top-1 recall here
QUERY_BLOCK = 4096  # queries per matrix product (bounds the (queries, entries) matrix)


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0


class ScopeIndex:
    def __init__(self, rows: ScopeRows, brute_max: int | None = None) -> None:
        self.keys = rows.keys
        self.texts = rows.texts
        self._matrix: np.ndarray | None = None
        self.index = None
        n, dim = rows.vectors.shape
        if n <= (BRUTE_MAX if brute_max is None else brute_max):
            self._matrix = np.ascontiguousarray(rows.vectors, dtype=np.float32)
            return
        from usearch.index import Index

        self.index = Index(
            ndim=dim,
            metric="cos",
            dtype="f16",
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        self.index.add(np.arange(n, dtype=np.uint64), rows.vectors, threads=_threads())

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def memory_bytes(self) -> int:
        if self._matrix is not None:
            return int(self._matrix.nbytes)
        return int(self.index.memory_usage) if self.index is not None else 0

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per query, best first: entry positions (m, k) int64 (-1: none) and cosine
        similarities (m, k) float32."""
        m = len(vectors)
        k = min(k, len(self.keys))
        if k == 0 or m == 0:
            return np.full((m, max(k, 0)), -1, np.int64), np.zeros((m, max(k, 0)), np.float32)
        if self._matrix is not None:
            return _brute(self._matrix, vectors, k)
        found = self.index.search(vectors, k, threads=_threads())  # type: ignore[union-attr]
        pos = np.asarray(found.keys, dtype=np.int64).reshape(m, k)
        sims = (1.0 - np.asarray(found.distances, dtype=np.float32)).reshape(m, k)
        counts = np.asarray(getattr(found, "counts", k)).reshape(-1)
        pos[np.arange(k)[None, :] >= counts[:, None]] = -1  # fewer than k found
        return pos, sims


def _brute(matrix: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.empty((len(vectors), k), np.int64)
    sims = np.empty((len(vectors), k), np.float32)
    for start in range(0, len(vectors), QUERY_BLOCK):
        block = vectors[start : start + QUERY_BLOCK] @ matrix.T
        top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else None
        if top is None:
            top = np.broadcast_to(np.arange(block.shape[1]), block.shape).copy()
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        pos[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        sims[start : start + len(block)] = np.take_along_axis(top_sims, order, axis=1)
    return pos, sims


class IndexPool:
    """Scope indexes, loaded on demand, at most `max_vectors` vectors in all."""

    def __init__(self, load: Callable[[bytes, int], ScopeRows], max_vectors: int):
        self._load = load
        self._max = max_vectors
        self._scopes: OrderedDict[bytes, ScopeIndex] = OrderedDict()
        self._size = 0

    def get(self, scope: bytes) -> ScopeIndex:
        idx = self._scopes.get(scope)
        if idx is not None:
            self._scopes.move_to_end(scope)
            return idx
        idx = ScopeIndex(self._load(scope, self._max))
        self._scopes[scope] = idx
        self._size += len(idx)
        while self._size > self._max and len(self._scopes) > 1:
            _, old = self._scopes.popitem(last=False)
            self._size -= len(old)
        return idx

    @property
    def vectors(self) -> int:
        return self._size
