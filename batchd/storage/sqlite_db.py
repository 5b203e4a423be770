"""Open a SQLite database that several batchd processes share (state, cache).

Switching a database to WAL takes an exclusive lock, and SQLite answers "database is
locked" at once, without its busy timeout, when another process is switching the same new
file at that moment (two watchers or submits starting together). The switch is retried
for up to `BUSY_TIMEOUT_S`, the same bound as every other statement's busy timeout.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT_S = 60.0
RETRY_S = 0.05


def open_shared(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode with the given `PRAGMA synchronous` (NORMAL, FULL)."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    give_up = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                db.close()
                raise
            time.sleep(RETRY_S)
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db
