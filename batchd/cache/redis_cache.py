"""Result cache in Redis (distributed mode): the same interface as SqliteCache.

Values are msgpack-encoded outcomes compressed with zlib (responses are repetitive
JSON), under one key per request key, with a TTL so the cache cannot grow forever.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import redis

from batchd.outcome import SUCCEEDED, Outcome

P = "batchd:c:"
DEFAULT_TTL_S = 30 * 24 * 3600
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Outcome)
MGET_GROUP = 1000


class RedisCache:
    def __init__(self, url: str, ttl_s: float = 0.0) -> None:
        # redis-py's stubs mix sync and async return types: treat the client as untyped.
        self._r: Any = redis.Redis.from_url(url)
        self._ttl_s = int(ttl_s) if ttl_s > 0 else DEFAULT_TTL_S

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Outcome]:
        found: dict[bytes, Outcome] = {}
        for i in range(0, len(keys), MGET_GROUP):
            group = list(keys[i : i + MGET_GROUP])
            for key, blob in zip(
                group,
                self._r.mget([P.encode() + k for k in group]),
                strict=True,
            ):
                if blob is not None:
                    found[key] = _dec.decode(zlib.decompress(blob))
        return found

    def put_many(self, items: Iterable[tuple[bytes, Outcome]]) -> int:
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for key, outcome in items:
            if outcome.status != SUCCEEDED:
                continue
            pipe.set(P.encode() + key, zlib.compress(_enc.encode(outcome)), ex=self._ttl_s)
            n += 1
        if n:
            pipe.execute()
        return n

    def close(self) -> None:
        self._r.close()
