"""The semantic cache's entries and labels in SQLite (embedded mode), in cache.db."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from batchd.cache.semantic.entries import Entry, Label, ScopeRows, scope_rows
from batchd.storage.private import ensure_private
from batchd.storage.sqlite_db import open_shared


class SqliteSemanticStore:
    def __init__(self, path: Path, ttl_s: float = 0.0) -> None:
        ensure_private(path)
        self._db = open_shared(path, "NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sem_entries (scope BLOB NOT NULL, key BLOB NOT NULL,"
            " stored_at REAL NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL,"
            " PRIMARY KEY (scope, key)) WITHOUT ROWID"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sem_labels (id INTEGER PRIMARY KEY, scope BLOB NOT NULL,"
            " entry_key BLOB NOT NULL, similarity REAL NOT NULL, ok INTEGER NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS sem_labels_scope ON sem_labels (scope, id)")
        self._ttl_s = ttl_s

    def add_entries(self, scope: bytes, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        now = time.time()
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO sem_entries VALUES (?, ?, ?, ?, ?)",
            [(scope, e.key, now, e.text, e.vector) for e in entries],
        )
        self._db.execute("COMMIT")

    def load(self, scope: bytes, limit: int, dim: int) -> ScopeRows:
        oldest = time.time() - self._ttl_s if self._ttl_s > 0 else 0.0
        rows = self._db.execute(
            "SELECT key, text, vector FROM sem_entries WHERE scope = ? AND stored_at >= ?"
            " ORDER BY stored_at DESC LIMIT ?",
            (scope, oldest, limit),
        ).fetchall()
        rows.reverse()
        keys, texts, blobs = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [])
        return scope_rows(keys, texts, blobs, dim)

    def set_vectors(self, scope: bytes, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if not keys:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "UPDATE sem_entries SET vector = ? WHERE scope = ? AND key = ?",
            [(v.tobytes(), scope, k) for k, v in zip(keys, vectors, strict=True)],
        )
        self._db.execute("COMMIT")

    def add_labels(self, scope: bytes, labels: Sequence[Label], keep: int) -> None:
        if not labels:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO sem_labels (scope, entry_key, similarity, ok) VALUES (?, ?, ?, ?)",
            [(scope, lb.entry_key, lb.similarity, int(lb.ok)) for lb in labels],
        )
        self._db.execute(
            "DELETE FROM sem_labels WHERE scope = ? AND id <= (SELECT id FROM sem_labels"
            " WHERE scope = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (scope, scope, keep),
        )
        self._db.execute("COMMIT")

    def labels(self, scope: bytes) -> list[Label]:
        rows = self._db.execute(
            "SELECT entry_key, similarity, ok FROM sem_labels WHERE scope = ? ORDER BY id",
            (scope,),
        )
        return [Label(k, s, bool(ok)) for k, s, ok in rows]

    def close(self) -> None:
        self._db.close()
