"""The semantic cache's entries and labels in Redis (distributed mode).

Per scope: a hash of entries (request key -> msgpack [stored_at, text, vector]) and a list
of labels (newest last, trimmed), both with the result cache's TTL, refreshed on write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import redis

from batchd.cache.redis_cache import DEFAULT_TTL_S
from batchd.cache.semantic.entries import Entry, Label

ENTRIES, LABELS = b"batchd:se:", b"batchd:sl:"
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

    def entries(self, scope: bytes, limit: int) -> list[Entry]:
        oldest = time.time() - self._ttl_s
        found = []
        for key, blob in self._r.hscan_iter(ENTRIES + scope, count=1000):
            at, text, vector = _entry.decode(blob)
            if at >= oldest:
                found.append((at, Entry(key, text, vector)))
        found.sort(key=lambda ae: ae[0])
        return [e for _, e in found[-limit:]]

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
