"""Where the semantic cache keeps its entries and labels: the SemanticStore interface.

An entry is a request that was sent to a model: its key (the answer is the result cache's
entry under that key), the scope it may match in, the compared text and its embedding, so
a later lookup embeds only its own text. A label is one observed outcome of a candidate
match (similarity, and whether the answers agreed): what the guard learns thresholds from.
Implementations: sqlite_semantic.SqliteSemanticStore, redis_semantic.RedisSemanticStore.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec
import numpy as np


class Entry(msgspec.Struct, array_like=True, gc=False):
    key: bytes
    text: str
    vector: bytes  # float32, unit length


class Label(msgspec.Struct, array_like=True, gc=False):
    entry_key: bytes
    similarity: float
    ok: bool


class SemanticStore(Protocol):
    def add_entries(self, scope: bytes, entries: Sequence[Entry]) -> None: ...
    def entries(self, scope: bytes, limit: int) -> list[Entry]:
        """The newest `limit` live entries of a scope, oldest first."""
        ...

    def add_labels(self, scope: bytes, labels: Sequence[Label], keep: int) -> None: ...
    def labels(self, scope: bytes) -> list[Label]: ...
    def close(self) -> None: ...


def as_matrix(entries: Sequence[Entry], dim: int) -> np.ndarray:
    if not entries:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(e.vector for e in entries), dtype=np.float32).reshape(-1, dim)
