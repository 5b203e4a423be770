"""In-run dedup past a memory budget: the blocks that follow go to disk in epochs, each
settled once the dedup answers for its lines are known.

Ingest checks every line's custom_id, and then every valid line's key, against what the
run has seen (intake.seen: 16 bytes an entry in memory). Past the budget, the two sets
move to disk (a file of what the run has seen, in 256 partitions by first byte) and are
freed; the blocks that follow are written here unsettled, and their ids and keys to 256
partitions, with their place in the epoch's sequence of checks. An epoch closes once it
holds a quarter of the lines spilled so far (at least EPOCH_MIN_LINES): then each
partition is read alone, and an entry is a repeat when the run saw it before the epoch
(the seen file, rewritten with the epoch's new entries) or an earlier entry of the epoch
has it. A key is asked only for a valid line whose id is new, as ingest asks. The answers
are bits, one a check. The epoch's blocks are then read back in order and settled as
before, each check answered from the bits (`Replay`), so chunk order, counts and rows are
those the in-memory sets give; ingest settles them while the next epoch is read, so
parsing and settling still overlap. Memory: a flush buffer, one partition, and two bits
a line of the epochs not yet settled; the sets' budget is given back at the switch.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import msgspec
import numpy as np
import numpy.typing as npt

from batchd.intake.records import Block
from batchd.intake.seen import Held, contains_sorted

PARTS = 256  # partition files per kind: a partition is 1/256 of the checks
FLUSH_ENTRIES = 1 << 16  # entries buffered before they go to their partitions (1.5 MB)
WINDOW = 1 << 18  # checks handled at once when turning bits over
EPOCH_MIN_LINES = 1 << 20  # an epoch holds at least this many lines (or a quarter so far)
_ENTRY_BYTES = 24  # an entry: hi, lo (the value as two uint64) and seq, a row of uint64
_FRAME = struct.Struct("<BQ")  # kind, length
_MSGPACK, _PICKLE = 0, 1
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Block)

_Bits = npt.NDArray[np.uint8]
_NONE = np.empty(0, dtype=np.uint64)
Settle = tuple[Block, "Replay", "Replay"]  # a block, with the answers to its id and key checks


class Spill:
    """The blocks after the switch, in epochs on disk; `ready` gives them back in order
    as their epochs close, `finish` the rest."""

    def __init__(
        self,
        seen_ids: Held,
        seen_keys: Held,
        directory: str | None = None,
        epoch_min_lines: int | None = None,
    ) -> None:
        """`seen_ids`, `seen_keys`: what was settled before the switch, copied to disk here;
        the caller drops them, so their memory is given back."""
        self._dir = tempfile.TemporaryDirectory(prefix="batchd-spill-", dir=directory)
        self._path = Path(self._dir.name)
        self._seen = (
            _Seen(self._path / "seen-ids", seen_ids),
            _Seen(self._path / "seen-keys", seen_keys),
        )
        self._epochs = 0
        self._open = self._new_epoch()
        self._closed: deque[_Epoch] = deque()
        self._epoch_min = EPOCH_MIN_LINES if epoch_min_lines is None else epoch_min_lines
        self.lines = 0  # spilled so far

    def __enter__(self) -> Spill:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._open.close()
        for epoch in self._closed:
            epoch.close()
        for seen in self._seen:
            seen.close()
        self._dir.cleanup()

    def add(self, block: Block) -> None:
        """The block to disk, with the id and key checks its settling will make."""
        n = self._open.add(block)
        self.lines += n
        if self._open.lines >= max(self._epoch_min, self.lines // 4):
            self._close_epoch()

    def ready(self) -> Settle | None:
        """The next block of a closed epoch, in input order; None when none is ready."""
        while self._closed:
            item = self._closed[0].next()
            if item is not None:
                return item
            self._closed.popleft().close()
        return None

    def finish(self) -> Iterator[Settle]:
        """Every block not yet given back, in order (the last epoch closed first)."""
        if self._open.lines or self._open.blocks:
            self._close_epoch()
        while (item := self.ready()) is not None:
            yield item
            del item  # not held while the next block is decoded

    def _new_epoch(self) -> _Epoch:
        self._epochs += 1
        return _Epoch(self._path / f"epoch-{self._epochs:05d}")

    def _close_epoch(self) -> None:
        epoch, self._open = self._open, self._new_epoch()
        epoch.resolve(self._seen)
        self._closed.append(epoch)


class _Epoch:
    """Some blocks, their checks in partitions, and once resolved, their answers."""

    def __init__(self, stem: Path) -> None:
        stem.mkdir()
        self._stem = stem
        self._blocks: BinaryIO = open(stem / "blocks", "w+b")  # noqa: SIM115 (closed in close)
        # per key check, the seq of its line's id check
        self._asker: BinaryIO = open(stem / "asker", "w+b")  # noqa: SIM115 (closed in close)
        self._ids = _Partitions(stem / "ids")
        self._keys = _Partitions(stem / "keys")
        self.blocks = 0
        self.lines = 0
        self._left = 0  # blocks not yet given back
        self._answers: tuple[Replay, Replay] | None = None

    def add(self, block: Block) -> int:
        try:
            frame, kind = _enc.encode(block), _MSGPACK
        except Exception:  # a string msgpack cannot hold (a lone surrogate): kept as is
            frame, kind = pickle.dumps(block, protocol=pickle.HIGHEST_PROTOCOL), _PICKLE
        self._blocks.write(_FRAME.pack(kind, len(frame)))
        self._blocks.write(frame)
        self.blocks += 1
        if block.columns is not None:
            ids, keys = block.columns.id_digests, block.columns.keys
            asked = np.arange(len(block.columns.custom_ids), dtype=np.uint64)
        else:
            records = block.records
            ids = b"".join([r.id_digest for r in records])
            valid = [i for i, r in enumerate(records) if r.error_type is None]
            keys = b"".join([records[i].key for i in valid])
            asked = np.array(valid, dtype=np.uint64)
        self._asker.write((asked + np.uint64(self._ids.count)).tobytes())
        self._ids.add(ids)
        self._keys.add(keys)
        n = len(ids) // 16
        self.lines += n
        return n

    def resolve(self, seen: tuple[_Seen, _Seen]) -> None:
        """Every check's answer, from what the run saw before this epoch and this one."""
        self._ids.flush()
        self._keys.flush()
        id_seen = self._ids.resolve(seen[0])
        asked = self._asked(id_seen)  # a bit per key check: its line's id is new
        key_seen = self._keys.resolve(seen[1], asked)
        n_keys = self._keys.count
        self._answers = (
            Replay(id_seen, self._ids.count),
            Replay(_compress(key_seen, asked, n_keys), _count(asked, n_keys)),
        )
        self._asker.close()
        self._blocks.seek(0)
        self._left = self.blocks

    def next(self) -> Settle | None:
        assert self._answers is not None
        ids, keys = self._answers
        if not self._left:
            ids.done()
            keys.done()
            return None
        self._left -= 1
        kind, n = _FRAME.unpack(self._blocks.read(_FRAME.size))
        frame = self._blocks.read(n)
        block = _dec.decode(frame) if kind == _MSGPACK else pickle.loads(frame)
        return block, ids, keys

    def close(self) -> None:
        self._blocks.close()
        self._asker.close()
        self._ids.close()
        self._keys.close()
        shutil.rmtree(self._stem, ignore_errors=True)  # settled: its disk is given back

    def _asked(self, id_seen: _Bits) -> _Bits:
        """Of the epoch's key checks, those whose line's id is new."""
        n = self._keys.count
        out = np.zeros((n + 7) // 8, dtype=np.uint8)
        self._asker.seek(0)
        for start in range(0, n, WINDOW):
            seq = np.frombuffer(self._asker.read(8 * min(WINDOW, n - start)), dtype=np.uint64)
            new = ~_bits_at(id_seen, seq)
            _set_bits(out, np.arange(start, start + len(seq), dtype=np.uint64)[new])
        return out


class _Seen:
    """What the run saw before the epoch being resolved: (hi, lo) pairs in one file, in
    runs each ordered by partition; a partition's pairs, gathered from the runs, are
    ordered by hi. It starts as the in-memory set's values, a run a window of them, and is
    rewritten as one run as each epoch closes."""

    def __init__(self, stem: Path, held: Held) -> None:
        self._stem = stem
        self._generation = 0
        self._file: BinaryIO = open(stem, "w+b")  # noqa: SIM115 (closed in close)
        self._runs: list[tuple[int, npt.NDArray[np.int64]]] = []  # offset (pairs), bounds
        self._ordered = False  # each partition ordered by hi on disk (once rewritten)
        at = 0
        for packed in held.packed_windows(FLUSH_ENTRIES):
            pairs, bounds = _by_partition(np.frombuffer(packed, dtype=np.uint64).reshape(-1, 2))
            self._file.write(pairs.data)  # from the array: no bytes copy
            self._runs.append((at, bounds))
            at += len(pairs)
        self._file.flush()

    def load(self, p: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        pairs = _gather(self._file, self._runs, p, 2)
        if not self._ordered:
            pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        return pairs[:, 0], pairs[:, 1]

    def rewrite(self) -> _SeenWriter:
        self._generation += 1
        return _SeenWriter(self, self._stem.with_name(f"{self._stem.name}-{self._generation}"))

    def replace(self, file: BinaryIO, bounds: npt.NDArray[np.int64]) -> None:
        self._file.close()
        os.unlink(self._file.name)
        self._file, self._runs, self._ordered = file, [(0, bounds)], True

    def close(self) -> None:
        self._file.close()


class _SeenWriter:
    """The next `_Seen` file, its partitions written in order."""

    def __init__(self, seen: _Seen, path: Path) -> None:
        self._seen = seen
        self._file: BinaryIO = open(path, "w+b")  # noqa: SIM115 (handed to _Seen)
        self._bounds = np.zeros(PARTS + 1, dtype=np.int64)
        self._p = 0

    def put(self, p: int, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> None:
        """Partition p's pairs (the partitions in order, each once at most)."""
        self._bounds[self._p + 1 : p + 1] = self._bounds[self._p]
        pairs = np.empty((len(hi), 2), dtype=np.uint64)
        pairs[:, 0], pairs[:, 1] = hi, lo
        self._file.write(pairs.tobytes())
        self._bounds[p + 1] = self._bounds[p] + len(hi)
        self._p = p + 1

    def done(self) -> None:
        self._bounds[self._p + 1 :] = self._bounds[self._p]
        self._file.flush()
        self._seen.replace(self._file, self._bounds)


class _Partitions:
    """16-byte values with their place in the sequence, by partition (their first byte):
    runs of FLUSH_ENTRIES, each ordered by partition, in one file."""

    def __init__(self, stem: Path) -> None:
        self._file: BinaryIO = open(stem, "w+b")  # noqa: SIM115 (closed in close)
        self._runs: list[tuple[int, npt.NDArray[np.int64]]] = []  # offset (entries), bounds
        self._end = 0  # entries written (the file's size, in entries)
        self.count = 0
        self._buffer: list[npt.NDArray[np.uint64]] = []
        self._buffered = 0

    def close(self) -> None:
        self._file.close()

    def add(self, packed: bytes) -> None:
        pairs = np.frombuffer(packed, dtype=np.uint64).reshape(-1, 2)
        n = len(pairs)
        entries = np.empty((n, 3), dtype=np.uint64)
        entries[:, :2] = pairs
        entries[:, 2] = np.arange(self.count, self.count + n, dtype=np.uint64)
        self.count += n
        self._buffer.append(entries)
        self._buffered += n
        if self._buffered >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        entries = np.concatenate(self._buffer)
        self._buffer, self._buffered = [], 0
        data, bounds = _by_partition(entries)
        del entries
        self._file.seek(self._end * _ENTRY_BYTES)
        self._file.write(data.data)  # from the array: no bytes copy
        self._runs.append((self._end, bounds))
        self._end += len(data)

    def part(self, p: int) -> npt.NDArray[np.uint64]:
        """Partition p's entries, one row each (hi, lo, seq)."""
        return _gather(self._file, self._runs, p, 3)

    def resolve(self, seen: _Seen, asked: _Bits | None = None) -> _Bits:
        """A bit per entry (by seq): in `seen` (what the run saw before the epoch), or
        earlier in the sequence; what is new joins `seen`. With `asked`, only the entries
        it marks are in the sequence (the others' bits are 0)."""
        self._file.flush()
        out = np.zeros((self.count + 7) // 8, dtype=np.uint8)
        writer = seen.rewrite()
        for p in range(PARTS):
            entries = self.part(p)
            if asked is not None and len(entries):
                entries = entries[_bits_at(asked, entries[:, 2])]
            seen_hi, seen_lo = seen.load(p)
            if not len(entries):
                writer.put(p, seen_hi, seen_lo)
                continue
            hi, lo, seq = (np.ascontiguousarray(entries[:, j]) for j in range(3))
            order = np.lexsort((seq, lo, hi))
            hi, lo, seq = hi[order], lo[order], seq[order]
            repeat = contains_sorted(seen_hi, seen_lo, hi, lo)
            first = np.ones(len(hi), dtype=bool)
            first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
            repeat |= ~first
            _set_bits(out, seq[repeat])
            new = ~repeat
            all_hi = np.concatenate([seen_hi, hi[new]])
            all_lo = np.concatenate([seen_lo, lo[new]])
            order = np.argsort(all_hi, kind="stable")
            writer.put(p, all_hi[order], all_lo[order])
        writer.done()
        return out


def _by_partition(
    rows: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Rows (hi, lo, ...) ordered by partition (hi's low byte: the value's first byte),
    stably, and where each partition starts (PARTS + 1 bounds)."""
    part = (rows[:, 0] & np.uint64(0xFF)).astype(np.uint8)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(PARTS + 1)).astype(np.int64)
    return np.take(rows, order, axis=0), bounds


def _gather(
    f: BinaryIO, runs: list[tuple[int, npt.NDArray[np.int64]]], p: int, width: int
) -> npt.NDArray[np.uint64]:
    """Partition p's rows of `width` uint64 from each run (offset in rows, bounds) of f."""
    size = 8 * width
    pieces = [
        _read(f, (off + int(b[p])) * size, int(b[p + 1] - b[p]) * size, np.uint64)
        for off, b in runs
        if b[p + 1] > b[p]
    ]
    flat = np.concatenate(pieces) if len(pieces) > 1 else pieces[0] if pieces else _NONE
    return flat.reshape(-1, width)


def _read(f: BinaryIO, offset: int, n: int, dtype: Any) -> npt.NDArray[Any]:
    data = os.pread(f.fileno(), n, offset)
    if len(data) != n:
        raise OSError(f"spill file {f.name}: read {len(data)} of {n} bytes at {offset}")
    return np.frombuffer(data, dtype=dtype)


class Replay:
    """A SeenSet's answers, given in advance: each check takes the next ones, in order."""

    def __init__(self, bits: _Bits, count: int) -> None:
        self._bits = bits
        self._count = count
        self._at = 0

    def check_add(self, values: list[bytes]) -> list[bool]:
        return self._take(len(values)).tolist()

    def check_add_packed(self, packed: bytes) -> npt.NDArray[np.bool_]:
        return self._take(len(packed) // 16)

    def _take(self, n: int) -> npt.NDArray[np.bool_]:
        start = self._at
        if start + n > self._count:
            raise RuntimeError("spilled dedup replay asked past its answers")
        self._at += n
        return _bits_at(self._bits, np.arange(start, start + n, dtype=np.uint64))

    def done(self) -> None:
        if self._at != self._count:
            raise RuntimeError(f"spilled dedup replay used {self._at} of {self._count} answers")


def _bits_at(bits: _Bits, at: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    return ((bits[at >> np.uint64(3)] >> (at & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)


def _set_bits(bits: _Bits, at: npt.NDArray[np.uint64]) -> None:
    np.bitwise_or.at(bits, at >> np.uint64(3), (1 << (at & np.uint64(7))).astype(np.uint8))


def _count(bits: _Bits, n: int) -> int:
    """Set bits among the first n."""
    full, rest = divmod(n, 8)
    total = int(np.bitwise_count(bits[:full]).sum(dtype=np.int64))
    if rest:
        total += int(np.bitwise_count(bits[full] & np.uint8((1 << rest) - 1)))
    return total


def _compress(values: _Bits, keep: _Bits, n: int) -> _Bits:
    """The bits of `values` at the places `keep` marks, packed end to end."""
    out = np.zeros((n + 7) // 8, dtype=np.uint8)
    filled = 0
    for start in range(0, n, WINDOW):
        at = np.arange(start, min(start + WINDOW, n), dtype=np.uint64)
        kept = at[_bits_at(keep, at)]
        got = np.flatnonzero(_bits_at(values, kept)).astype(np.uint64) + np.uint64(filled)
        _set_bits(out, got)
        filled += len(kept)
    return out
