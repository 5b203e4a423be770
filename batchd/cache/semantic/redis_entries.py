"""The semantic cache's entries and labels in Redis (distributed mode).

Per scope: a hash of entries (request key -> msgpack [stored_at, text, vector]) and a list
of labels (newest last, trimmed), both with the result cache's TTL, refreshed on write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import redis

from batchd.cache.redis_cache import DEFAULT_TTL_S
from batchd.cache.semantic.entries import Entry, Label, ScopeRows, scope_rows

ENTRIES, LABELS = b"batchd:se:", b"batchd:sl:"
SCAN_COUNT = 10_000  # entries per HSCAN round trip
_enc = msgspec.msgpack.Encoder()
_entry = msgspec.msgpack.Decoder(tuple[float, str, bytes])
_label = msgspec.msgpack.Decoder(Label)


class RedisSemanticStore:
    def __init__(self, url: str, ttl_s: float = 0.0) -> None:
        self._r: Any = redis.Redis.from_url(url)
        self._ttl_s = int(ttl_s) if ttl_s > 0 else DEFAULT_TTL_S

    def add_entries(self, scope: bytes, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        now = time.time()
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(
            ENTRIES + scope, mapping={e.key: _enc.encode((now, e.text, e.vector)) for e in entries}
        )
        pipe.expire(ENTRIES + scope, self._ttl_s)
        pipe.execute()

    def load(self, scope: bytes, limit: int, dim: int) -> ScopeRows:
        oldest = time.time() - self._ttl_s
        found = []
        for key, blob in self._r.hscan_iter(ENTRIES + scope, count=SCAN_COUNT):
            at, text, vector = _entry.decode(blob)
            if at >= oldest:
                found.append((at, key, text, vector))
        found.sort(key=lambda row: row[0])
        found = found[-limit:] if limit < len(found) else found
        return scope_rows([r[1] for r in found], [r[2] for r in found], [r[3] for r in found], dim)

    def set_vectors(self, scope: bytes, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if not keys:
            return
        blobs = self._r.hmget(ENTRIES + scope, list(keys))
        mapping = {}
        for key, blob, v in zip(keys, blobs, vectors, strict=True):
            if blob is not None:  # expired meanwhile: nothing to complete
                at, text, _ = _entry.decode(blob)
                mapping[key] = _enc.encode((at, text, v.tobytes()))
        if mapping:
            self._r.hset(ENTRIES + scope, mapping=mapping)

    def add_labels(self, scope: bytes, labels: Sequence[Label], keep: int) -> None:
        if not labels:
            return
        pipe = self._r.pipeline(transaction=False)
        pipe.rpush(LABELS + scope, *(_enc.encode(lb) for lb in labels))
        pipe.ltrim(LABELS + scope, -keep, -1)
        pipe.expire(LABELS + scope, self._ttl_s)
        pipe.execute()

    def labels(self, scope: bytes) -> list[Label]:
        return [_label.decode(b) for b in self._r.lrange(LABELS + scope, 0, -1)]

    def close(self) -> None:
        self._r.close()
