"""Run and chunk state in SQLite under BATCHD_HOME (embedded mode).

Every chunk change is a compare-and-set on its current state (see base.Store). One
process drives a run (the driver lock in run.identity), so a write's fence, if any, is
always valid here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from batchd.state.base import (
    Chunk,
    Fence,
    Run,
)
from batchd.storage.private import ensure_private
from batchd.storage.sqlite_db import open_shared

_enc = msgspec.json.Encoder()
_RUN_DEC = msgspec.json.Decoder(Run)
_CHUNK_DEC = msgspec.json.Decoder(Chunk)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        ensure_private(path)  # 0600 whatever the umask; SQLite's -wal/-shm follow it
        self._db = open_shared(path, "FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS runs (
                run_id TEXT PRIMARY KEY, base_id TEXT NOT NULL, created_at REAL NOT NULL,
                doc TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS runs_base ON runs (base_id, created_at);
            CREATE TABLE IF NOT EXISTS chunks (
                chunk_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, state TEXT NOT NULL,
                doc TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS chunks_run ON chunks (run_id);
            CREATE TABLE IF NOT EXISTS claims (
                namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                created_at REAL NOT NULL, PRIMARY KEY (namespace, key));
            CREATE TABLE IF NOT EXISTS observations (
                key TEXT PRIMARY KEY, num REAL NOT NULL, den REAL NOT NULL);
            """
        )

    # --- runs -------------------------------------------------------------------------
    def create_run(self, run: Run) -> bool:
        run.created_at = run.updated_at = time.time()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?)",
            (run.run_id, run.base_id, run.created_at, _enc.encode(run).decode()),
        )
        return cur.rowcount == 1

    def get_run(self, run_id: str) -> Run | None:
        row = self._db.execute("SELECT doc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _RUN_DEC.decode(row[0]) if row else None

    def runs_with_base(self, base_id: str) -> list[Run]:
        rows = self._db.execute(
            "SELECT doc FROM runs WHERE base_id = ? ORDER BY created_at", (base_id,)
        )
        return [_RUN_DEC.decode(r[0]) for r in rows]

    def list_runs(self, limit: int = 50) -> list[Run]:
        rows = self._db.execute("SELECT doc FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_RUN_DEC.decode(r[0]) for r in rows]

    def update_run(self, run_id: str, fence: Fence | None = None, **fields: Any) -> Run:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            run = self.get_run(run_id)
            if run is None:
                raise KeyError(run_id)
            for name, value in fields.items():
                setattr(run, name, value)
            run.updated_at = time.time()
            self._db.execute(
                "UPDATE runs SET doc = ? WHERE run_id = ?", (_enc.encode(run).decode(), run_id)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return run

    # --- chunks -----------------------------------------------------------------------
    def add_chunks(self, chunks: list[Chunk], fence: Fence | None = None) -> None:
        """Insert chunks; ones that exist already are left as they are (idempotent)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)",
                [(c.chunk_id, c.run_id, c.state, _enc.encode(c).decode()) for c in chunks],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def chunks(self, run_id: str) -> list[Chunk]:
        rows = self._db.execute(
            "SELECT doc FROM chunks WHERE run_id = ? ORDER BY chunk_id", (run_id,)
        )
        return [_CHUNK_DEC.decode(r[0]) for r in rows]

    def get_chunk(self, chunk_id: str) -> Chunk | None:
        row = self._db.execute("SELECT doc FROM chunks WHERE chunk_id = ?", (chunk_id,)).fetchone()
        return _CHUNK_DEC.decode(row[0]) if row else None

    def transition(
        self,
        chunk_id: str,
        from_states: tuple[str, ...],
        new_children: list[Chunk] | None = None,
        fence: Fence | None = None,
        **fields: Any,
    ) -> Chunk | None:
        """Set `fields` on the chunk iff its state is in `from_states`; add children atomically.

        Returns the updated chunk, or None when another step got there first.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            chunk = self.get_chunk(chunk_id)
            if chunk is None or chunk.state not in from_states:
                self._db.execute("ROLLBACK")
                return None
            for name, value in fields.items():
                setattr(chunk, name, value)
            self._db.execute(
                "UPDATE chunks SET state = ?, doc = ? WHERE chunk_id = ?",
                (chunk.state, _enc.encode(chunk).decode(), chunk_id),
            )
            for c in new_children or []:
                self._db.execute(
                    "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?)",
                    (c.chunk_id, c.run_id, c.state, _enc.encode(c).decode()),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return chunk

    def check_fence(self) -> None:
        """Embedded mode: the driver lock already makes this process the run's only driver."""

    def known_batch_ids(self) -> set[str]:
        """Every vendor batch id any chunk has recorded (to tell ours from a stranger's)."""
        rows = self._db.execute(
            "SELECT json_extract(doc, '$.vendor_batch_id') FROM chunks"
            " WHERE json_extract(doc, '$.vendor_batch_id') IS NOT NULL"
        )
        return {r[0] for r in rows}

    # --- claims (drop-folder files, scheduled firings): first writer wins -----------------
    def claim(self, namespace: str, key: str, value: str) -> bool:
        """Record `key` in `namespace` iff nobody has; True for the one caller that did."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?)",
            (namespace, key, value, time.time()),
        )
        return cur.rowcount == 1

    def unclaim(self, namespace: str, key: str) -> None:
        self._db.execute("DELETE FROM claims WHERE namespace = ? AND key = ?", (namespace, key))

    def claims(self, namespace: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT key, value FROM claims WHERE namespace = ? ORDER BY key", (namespace,)
        )
        return dict(rows.fetchall())

    # --- planner observations ---------------------------------------------------------
    def add_observations(
        self, sums: dict[str, tuple[float, float]], fence: Fence | None = None
    ) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO observations VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET num = num + excluded.num, den = den + excluded.den",
                [(k, num, den) for k, (num, den) in sums.items()],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def observations(self) -> dict[str, tuple[float, float]]:
        rows = self._db.execute("SELECT key, num, den FROM observations")
        return {k: (num, den) for k, num, den in rows}

    def close(self) -> None:
        self._db.close()
