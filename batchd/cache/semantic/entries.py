"""Where the semantic cache keeps its entries and labels: the SemanticStore interface.

An entry is a request that was sent to a model: its key (the answer is the result cache's
entry under that key), the scope it may match in, the compared text and its embedding, so
a later lookup embeds only its own text. An entry may be stored without its embedding
(`vector = b""`) when no lookup needed one yet (its scope had no entries): the first lookup
of that scope embeds such entries once and stores their vectors (`set_vectors`).
A label is one observed outcome of a candidate match (similarity, and whether the answers
agreed): what the guard learns thresholds from.
Implementations: sqlite_entries.SqliteSemanticStore, redis_entries.RedisSemanticStore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np

NO_VECTOR = b""


class Entry(msgspec.Struct, array_like=True, gc=False):
    key: bytes
    text: str
    vector: bytes  # float32, unit length; NO_VECTOR: not embedded yet


class Label(msgspec.Struct, array_like=True, gc=False):
    entry_key: bytes
    similarity: float
    ok: bool


@dataclass
class ScopeRows:
    """A scope's entries in bulk, oldest first: what an index is built from."""

    keys: list[bytes]
    texts: list[str]
    vectors: np.ndarray  # (n, dim) float32; rows of entries with no vector yet are zero
    missing: np.ndarray  # (n,) bool: stored without a vector

    def __len__(self) -> int:
        return len(self.keys)


class SemanticStore(Protocol):
    def add_entries(self, scope: bytes, entries: Sequence[Entry]) -> None: ...
    def load(self, scope: bytes, limit: int, dim: int) -> ScopeRows:
        """The newest `limit` live entries of a scope, oldest first, in one read."""
        ...

    def set_vectors(self, scope: bytes, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Vectors for entries stored without one (their age is kept)."""
        ...

    def add_labels(self, scope: bytes, labels: Sequence[Label], keep: int) -> None: ...
    def labels(self, scope: bytes) -> list[Label]: ...
    def close(self) -> None: ...


def scope_rows(keys: list[bytes], texts: list[str], blobs: Sequence[bytes], dim: int) -> ScopeRows:
    """Rows from stored vector blobs: one join and one frombuffer, no per-entry arrays."""
    row_bytes = 4 * dim
    missing = np.fromiter((len(b) != row_bytes for b in blobs), dtype=bool, count=len(blobs))
    zero = bytes(row_bytes)
    joined = b"".join(zero if m else b for b, m in zip(blobs, missing, strict=True))
    vectors = np.frombuffer(joined, dtype=np.float32).reshape(len(blobs), dim)
    return ScopeRows(keys, texts, vectors.copy() if missing.any() else vectors, missing)
