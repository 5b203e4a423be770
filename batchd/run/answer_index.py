"""Every chunk's outcomes of a run, indexed by request key: what finalize joins the lines with;
and the answers of a few keys read straight from the chunks' outcome parts (`succeeded_texts`).

The chunks' outcome parts are Arrow frames (storage.chunk_outcomes), read as columns. They
are combined into big record batches: one held in memory when the run's outcomes fit in it,
else each written to an Arrow IPC file in the run's scratch folder and read back
memory-mapped (memory stays bounded by the pages touched). The keys, sorted, stay in memory
as fixed-width numpy strings (16 bytes a request) with each key's row among the outcomes;
a lines batch's outcomes are one `take` from those rows. A later chunk's outcome for a key
replaces an earlier one.
A cascade's earlier answers (the ones that went on) sit in a small SQLite table: the rare
lines that have them are joined in Python (`joined`).
"""

from __future__ import annotations

import sqlite3
from contextlib import ExitStack
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchd.outcome import SUCCEEDED, Outcome
from batchd.output.columnar_outcomes import KeyCodec, fixed_width
from batchd.planning.escalation import encode_entries, entries_of
from batchd.planning.observations import Observer
from batchd.run.services import Services
from batchd.state.base import Chunk, Run
from batchd.storage.arrow_outcomes import (
    KEY,
    OUTCOME_SCHEMA,
    outcome_batch,
    outcomes_of,
)
from batchd.storage.chunk_outcomes import read_outcome_batches, read_outcomes
from batchd.storage.private import make_dirs
from batchd.storage.sqlkeys import select_in

# The outcomes are held as few big record batches, so a lines batch takes its outcomes from
# few (a take from one batch is several times faster than from many). A run's outcomes up to
# one such batch stay in memory; beyond, each batch goes to an IPC file, read memory-mapped.
FILE_BATCH_ROWS = 1 << 20
FILE_BATCH_BYTES = 256 << 20
_EMPTY = OUTCOME_SCHEMA.empty_table()
_outcome_enc = msgspec.msgpack.Encoder()
_outcome_dec = msgspec.msgpack.Decoder(Outcome)


def scratch_dir(svc: Services) -> Path:
    path = svc.home / "tmp"
    make_dirs(path)
    return path


class OutcomeIndex:
    """The run's final outcome per request key, looked up in bulk."""

    def __init__(self, folder: Path) -> None:
        self._ipc_path = folder / "outcomes.arrow"
        # read by the thread that finds the next batch's outcomes (one at a time)
        self._db = sqlite3.connect(folder / "escalated.db", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE e (key BLOB, outcome BLOB)")  # answers that went on
        self._db.execute("CREATE INDEX e_key ON e (key)")
        self._table = _EMPTY  # every outcome, in the order read: few big chunks
        self._codec = KeyCodec(16)
        self._keys = np.zeros(0, dtype=self._codec.dtype)  # sorted
        self._rows = np.zeros(0, dtype=np.int64)  # each sorted key's row in the file
        self._prefix: np.ndarray | None = None  # the sorted keys' first 8 bytes, as numbers
        self._with_priors: set[bytes] = set()

    def close(self) -> None:
        self._table = _EMPTY
        self._db.close()

    # --- building ---------------------------------------------------------------------------

    def build(self, svc: Services, run: Run, observer: Observer | None = None) -> None:
        blobs = svc.blobs(run.run_id)
        key_parts: list[pa.Array] = []
        pending: list[pa.RecordBatch] = []  # frames not yet in the file
        size = [0, 0]  # their rows and bytes
        writer: pa.ipc.RecordBatchFileWriter | None = None

        def combined() -> pa.Table:
            table = pa.Table.from_batches(pending, schema=OUTCOME_SCHEMA).combine_chunks()
            pending.clear()
            size[:] = [0, 0]
            return table

        with ExitStack() as files:
            for chunk in svc.store.chunks(run.run_id):
                if chunk.escalated_path is not None:
                    with blobs.open(chunk.escalated_path) as src:
                        self._db.executemany(
                            "INSERT INTO e VALUES (?, ?)",
                            ((k, _outcome_enc.encode(o)) for k, o in read_outcomes(src)),
                        )
                if chunk.result_path is None:
                    continue
                with blobs.open(chunk.result_path) as src:
                    for batch in read_outcome_batches(src):  # a frame: up to 8,192 outcomes
                        if observer is not None:
                            _observe(observer, batch, chunk)
                        # a copy: a frame's columns share one buffer, freed once combined
                        key_parts.append(pa.concat_arrays([batch.column(KEY)]))
                        pending.append(batch.drop_columns([KEY]))
                        size[0] += batch.num_rows
                        size[1] += batch.nbytes
                        if size[0] >= FILE_BATCH_ROWS or size[1] >= FILE_BATCH_BYTES:
                            if writer is None:  # more than one big batch: to the file
                                sink = files.enter_context(pa.OSFile(str(self._ipc_path), "wb"))
                                writer = pa.ipc.new_file(sink, OUTCOME_SCHEMA)
                            writer.write_table(combined(), max_chunksize=None)
            if writer is None:  # all of them fit in one batch: kept in memory
                self._table = combined()
            else:
                if pending:
                    writer.write_table(combined(), max_chunksize=None)
                writer.close()
        self._db.commit()
        self._with_priors = {k for (k,) in self._db.execute("SELECT DISTINCT key FROM e")}
        self._index_keys(pa.concat_arrays(key_parts) if key_parts else pa.array([], pa.binary()))
        if writer is not None:  # read back memory-mapped: the pages touched, not the file
            reader = pa.ipc.open_file(pa.memory_map(str(self._ipc_path), "r"))
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            self._table = pa.Table.from_batches(batches, schema=OUTCOME_SCHEMA)

    def _index_keys(self, keys: pa.Array) -> None:
        """Sort the keys; where a key came more than once the last (latest chunk's) wins."""
        lengths = np.asarray(pc.binary_length(keys), dtype=np.int64)
        self._codec = KeyCodec.for_keys(lengths)
        encoded = None if self._codec.width is None else fixed_width(keys, self._codec.width)
        if encoded is None:
            encoded = self._codec.encode(keys.to_pylist())[0]
        del keys
        order = np.argsort(encoded, kind="stable")
        ordered = encoded[order]
        last = np.ones(len(ordered), dtype=bool)
        last[:-1] = ordered[1:] != ordered[:-1]
        self._keys = ordered[last]
        self._rows = order[last].astype(np.int64)
        self._prefix = _prefixes(self._keys)
        if self._prefix is not None and bool((self._prefix[1:] == self._prefix[:-1]).any()):
            self._prefix = None  # two keys share their first 8 bytes: search whole keys

    def _search(self, query: np.ndarray) -> np.ndarray:
        """Where each query key is, or would go, in the sorted keys."""
        prefix = _prefixes(query) if self._prefix is not None else None
        if self._prefix is not None and prefix is not None:
            return np.searchsorted(self._prefix, prefix)  # the keys' first 8 bytes: unique
        return np.searchsorted(self._keys, query)

    # --- looking up -------------------------------------------------------------------------

    def find(self, keys: pa.Array) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """Outcomes of the keys found: a table, each found key's row in it (in the keys'
        order), and which keys were found. `keys`: an Arrow binary array without nulls."""
        query, ok = self._codec.encode_arrow(keys)
        found = ok.copy()
        if len(self._keys) == 0:
            found[:] = False
            return _EMPTY, np.zeros(0, dtype=np.int64), found
        at = np.minimum(self._search(query), len(self._keys) - 1)
        found &= self._keys[at] == query
        table, index = self._table, self._rows[at[found]]  # the caller takes, once
        if self._with_priors:
            table = self._join_priors(keys.filter(pa.array(found)), table.take(index))
            index = np.arange(table.num_rows, dtype=np.int64)
        return table, index, found

    def _join_priors(self, keys: pa.Array, batch: pa.Table) -> pa.Table:
        """Rows of keys with earlier answers (a cascade) replaced by their joined outcome."""
        key_list = keys.to_pylist()
        where = [i for i, k in enumerate(key_list) if k in self._with_priors]
        if not where:
            return batch
        finals = outcomes_of(batch.take(pa.array(where)))
        earlier = self._priors([key_list[i] for i in where])
        joined_rows = outcome_batch(
            [joined(earlier.get(key_list[i], []), o) for i, o in zip(where, finals, strict=True)]
        )
        order = np.arange(batch.num_rows, dtype=np.int64)
        order[where] = batch.num_rows + np.arange(len(where))
        both = pa.concat_tables([batch, pa.Table.from_batches([joined_rows])]).combine_chunks()
        return both.take(pa.array(order))

    def _priors(self, keys: list[bytes]) -> dict[bytes, list[Outcome]]:
        sql = "SELECT key, outcome FROM e WHERE key IN ({keys})"
        earlier: dict[bytes, list[Outcome]] = {}
        for key, blob in select_in(self._db, sql, sorted(set(keys))):
            earlier.setdefault(key, []).append(_outcome_dec.decode(blob))
        return earlier

    def lookup(self, keys: list[bytes]) -> dict[bytes, Outcome]:
        """The final outcome per key found, as structs (the per-row users: quality guard)."""
        unique = sorted(set(keys))
        table, index, found = self.find(pa.array(unique, type=pa.binary()))
        hits = [k for k, f in zip(unique, found.tolist(), strict=True) if f]
        return dict(zip(hits, outcomes_of(table.take(index)), strict=True))


def outcome_index(
    svc: Services, run: Run, folder: Path, observer: Observer | None = None
) -> OutcomeIndex:
    """The run's outcome index, built in `folder` (a scratch folder of this finalize)."""
    index = OutcomeIndex(folder)
    index.build(svc, run, observer)
    return index


def _prefixes(keys: np.ndarray) -> np.ndarray | None:
    """The first 8 bytes of each fixed-width key as a big-endian number (sorts as the key
    does); None unless the width is a multiple of 8."""
    width = keys.dtype.itemsize
    if width % 8 or not keys.flags.c_contiguous:
        return None
    return np.ascontiguousarray(keys.view(">u8").reshape(-1, width // 8)[:, 0])


def _observe(observer: Observer, batch: pa.RecordBatch, chunk: Chunk) -> None:
    """Let the observer sum what a batch of one chunk's outcomes measured (tokens, GPU time)."""
    ok = np.asarray(pc.fill_null(pc.equal(batch.column("status"), SUCCEEDED), False))
    col = {
        f: np.asarray(batch.column(f))
        for f in ("input_tokens", "cached_input_tokens", "output_tokens", "gpu_seconds")
    }
    on_gpu = col["gpu_seconds"] > 0
    ok &= col["input_tokens"] > 0
    observer.add_totals(
        chunk,
        gpu_seconds=col["gpu_seconds"][on_gpu].tolist(),
        gpu_tokens=int(col["input_tokens"][on_gpu].sum() + col["output_tokens"][on_gpu].sum()),
        succeeded=int(ok.sum()),
        input_tokens=int(col["input_tokens"][ok].sum()),
        cached_input_tokens=int(col["cached_input_tokens"][ok].sum()),
        output_tokens=int(col["output_tokens"][ok].sum()),
    )


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
    """The succeeded answers' texts of `keys`, from the chunks' outcome parts (the judge
    step's and the answer embedding step's)."""
    blobs = svc.blobs(run.run_id)
    found: dict[bytes, str] = {}
    wanted = pa.array(sorted(keys), pa.binary())
    for c in chunks:
        if c.result_path is None:
            continue
        with blobs.open(c.result_path) as src:
            for batch in read_outcome_batches(src):
                mine = pc.and_(
                    pc.is_in(batch.column(KEY), wanted),
                    pc.and_(
                        pc.equal(batch.column("status"), SUCCEEDED),
                        pc.is_valid(batch.column("output_text")),
                    ),
                )
                part = batch.filter(pc.fill_null(mine, False))
                found.update(
                    zip(
                        part.column(KEY).to_pylist(),
                        part.column("output_text").to_pylist(),
                        strict=True,
                    )
                )
    return found
