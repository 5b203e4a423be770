"""Every chunk's outcomes of a run, indexed by request key in a scratch SQLite file: what
finalize joins the lines with; and the answers of a few keys read straight from the chunks'
outcome parts (`succeeded_texts`: the judge step's and the answer embedding step's)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec

from batchd.outcome import SUCCEEDED, Outcome
from batchd.planning.escalation import encode_entries, entries_of
from batchd.planning.observations import Observer
from batchd.run.services import Services
from batchd.state.base import Chunk, Run
from batchd.storage.chunk_outcomes import read_outcomes
from batchd.storage.private import make_dirs
from batchd.storage.sqlkeys import select_in

CACHE_KIB = 64 * 1024
_outcome_enc = msgspec.msgpack.Encoder()
_outcome_dec = msgspec.msgpack.Decoder(Outcome)


def scratch_dir(svc: Services) -> Path:
    path = svc.home / "tmp"
    make_dirs(path)
    return path


def outcome_index(
    svc: Services, run: Run, path: Path, observer: Observer | None = None
) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # the default 2 MB thrashes on random keys
    db.execute("CREATE TABLE o (key BLOB PRIMARY KEY, outcome BLOB) WITHOUT ROWID")
    db.execute("CREATE TABLE e (key BLOB, outcome BLOB)")  # answers that went on (cascades)
    db.execute("CREATE INDEX e_key ON e (key)")
    blobs = svc.blobs(run.run_id)
    for chunk in svc.store.chunks(run.run_id):
        if chunk.escalated_path is not None:
            with blobs.open(chunk.escalated_path) as src:
                db.executemany(
                    "INSERT INTO e VALUES (?, ?)",
                    ((k, _outcome_enc.encode(o)) for k, o in read_outcomes(src)),
                )
        if chunk.result_path is None:
            continue
        with blobs.open(chunk.result_path) as src:
            db.executemany(
                "INSERT OR REPLACE INTO o VALUES (?, ?)",
                (
                    (k, _outcome_enc.encode(o))
                    for k, o in _observed(read_outcomes(src), chunk, observer)
                ),
            )
    db.commit()
    return db


def _observed(
    items: Iterator[tuple[bytes, Outcome]], chunk: Chunk, observer: Observer | None
) -> Iterator[tuple[bytes, Outcome]]:
    """Pass outcomes through, letting the observer sum what they measured (tokens, GPU time)."""
    for k, o in items:
        if observer is not None:
            observer.add(chunk, o)
        yield k, o


def lookup_outcomes(db: sqlite3.Connection, keys: list[bytes]) -> dict[bytes, Outcome]:
    """The final outcome per key; a cascaded line's joined with the answers that went on."""
    unique = sorted(set(keys))  # in key order: neighbouring pages of the index
    sql = "SELECT key, outcome FROM o WHERE key IN ({keys})"
    decode = _outcome_dec.decode
    found = {key: decode(blob) for key, blob in select_in(db, sql, unique)}
    if db.execute("SELECT 1 FROM e LIMIT 1").fetchone() is None:
        return found  # no cascade in this run: no answers went on
    earlier: dict[bytes, list[Outcome]] = {}
    for key, blob in select_in(db, "SELECT key, outcome FROM e WHERE key IN ({keys})", unique):
        earlier.setdefault(key, []).append(_outcome_dec.decode(blob))
    for key, priors in earlier.items():
        if key in found:
            found[key] = joined(priors, found[key])
    return found


def joined(priors: list[Outcome], final: Outcome) -> Outcome:
    """A cascaded line's final outcome: every attempt in `escalations`, `cost_usd` the total."""
    priors.sort(key=lambda o: o.completed_at or 0.0)
    entries = [e for o in priors for e in entries_of(o)] + entries_of(final)
    return msgspec.structs.replace(
        final,
        escalations=encode_entries(entries),
        cost_usd=final.cost_usd + sum(o.cost_usd for o in priors),
    )


def succeeded_texts(
    svc: Services, run: Run, chunks: list[Chunk], keys: set[bytes]
) -> dict[bytes, str]:
    """The succeeded answers' texts of `keys`, from the chunks' outcome parts."""
    blobs = svc.blobs(run.run_id)
    found: dict[bytes, str] = {}
    for c in chunks:
        if c.result_path is None:
            continue
        with blobs.open(c.result_path) as src:
            for k, o in read_outcomes(src):
                if k in keys and o.status == SUCCEEDED and o.output_text is not None:
                    found[k] = o.output_text
    return found
