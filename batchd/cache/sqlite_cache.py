"""Result cache in SQLite (embedded mode): the Cache interface of base.py."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from batchd.outcome import SUCCEEDED, Outcome
from batchd.storage.private import ensure_private
from batchd.storage.sqlite_db import open_shared
from batchd.storage.sqlkeys import select_in

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Outcome)


class SqliteCache:
    def __init__(self, path: Path, ttl_s: float = 0.0) -> None:
        ensure_private(path)  # 0600 whatever the umask; SQLite's -wal/-shm follow it
        self._db = open_shared(path, "NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (key BLOB PRIMARY KEY, stored_at REAL NOT NULL,"
            " outcome BLOB NOT NULL) WITHOUT ROWID"
        )
        self._ttl_s = ttl_s

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Outcome]:
        found: dict[bytes, Outcome] = {}
        if not keys:
            return found
        # an empty cache (a first run, a plan on a fresh home) answers with one cheap query,
        # not one per 256 keys
        if self._db.execute("SELECT 1 FROM results LIMIT 1").fetchone() is None:
            return found
        oldest = time.time() - self._ttl_s if self._ttl_s > 0 else 0.0
        sql = "SELECT key, outcome FROM results WHERE key IN ({keys}) AND stored_at >= ?"
        for key, blob in select_in(self._db, sql, keys, (oldest,)):
            found[key] = _dec.decode(blob)
        return found

    def put_many(self, items: Iterable[tuple[bytes, Outcome]]) -> int:
        now = time.time()
        rows = [(k, now, _enc.encode(o)) for k, o in items if o.status == SUCCEEDED]
        if rows:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")
        return len(rows)

    def close(self) -> None:
        self._db.close()
