"""The result cache interface. Keys are tenant-scoped by construction; only successful
outcomes are stored; lookups are batched. Implementations: sqlite_cache.SqliteCache
(embedded) and redis_cache.RedisCache (distributed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from batchd.outcome import Outcome


class Cache(Protocol):
    """The result cache: SqliteCache (embedded) or RedisCache (distributed)."""

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Outcome]: ...
    def put_many(self, items: Iterable[tuple[bytes, Outcome]]) -> int: ...
    def close(self) -> None: ...
