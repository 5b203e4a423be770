"""In-run dedup past a memory budget: the rest of the blocks on disk, answered at the end.

Ingest checks every line's custom_id, and then every valid line's key, against what the
run has seen (intake.seen: 16 bytes an entry in memory). Past the budget, the blocks that
follow are written here as they come, unsettled; their ids and keys go to 256 partition
files by their first byte (with their place in the sequence of checks). At the end each
partition is read alone: an id is a repeat when the in-memory set holds it or an earlier
entry of its partition has it; a key is asked only for a valid line whose id is new (as
ingest asks), and is a repeat likewise. The answers are bits, one a check. The blocks are
then read back in order and settled as before, each check answered from the bits
(`Replay`), so chunk order, counts and rows are the ones the in-memory sets give. Memory:
the budget, a flush buffer, one partition, and two bits a line.
"""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import msgspec
import numpy as np
import numpy.typing as npt

from batchd.intake.records import Block
from batchd.intake.seen import SeenSet

PARTS = 256  # partition files per kind: a partition is 1/256 of the spilled checks
FLUSH_ENTRIES = 1 << 18  # entries buffered before they go to their partitions
WINDOW = 1 << 18  # checks handled at once when turning bits over
_ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("seq", "<u8")])
_FRAME = struct.Struct("<BQ")  # kind, length
_MSGPACK, _PICKLE = 0, 1
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Block)

_Bits = npt.NDArray[np.uint8]


class Spill:
    """The blocks after the switch, and the dedup checks they will make, on disk."""

    def __init__(self, seen_ids: SeenSet, seen_keys: SeenSet, directory: str | None = None):
        self._prefix_ids = seen_ids  # what was settled before the switch (read only now)
        self._prefix_keys = seen_keys
        self._dir = tempfile.TemporaryDirectory(prefix="batchd-spill-", dir=directory)
        self._path = Path(self._dir.name)
        self._blocks = open(self._path / "blocks", "w+b")  # noqa: SIM115 (closed in close)
        self._ids = _Partitions(self._path / "ids")
        self._keys = _Partitions(self._path / "keys")
        # per key check, the seq of its line's id check
        self._asker = open(self._path / "asker", "w+b")  # noqa: SIM115 (closed in close)
        self.blocks = 0

    def __enter__(self) -> Spill:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._blocks.close()
        self._asker.close()
        self._dir.cleanup()

    def add(self, block: Block) -> None:
        """The block to disk, with the id and key checks its settling will make."""
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
        first_id = self._ids.count
        self._ids.add(ids)
        self._asker.write((asked + np.uint64(first_id)).tobytes())
        self._keys.add(keys)

    def replay(self) -> Iterator[tuple[Block, Replay, Replay]]:
        """The blocks in order, with the answers to their id and key checks."""
        self._ids.flush()
        self._keys.flush()
        id_seen = self._ids.resolve(self._prefix_ids)
        ids = Replay(id_seen, self._ids.count)
        asked = self._asked(id_seen)  # a bit per key check: its line's id is new
        key_seen = self._keys.resolve(self._prefix_keys, asked)
        keys = Replay(_compress(key_seen, asked, self._keys.count), int(_count(asked)))
        self._blocks.seek(0)
        for _ in range(self.blocks):
            kind, n = _FRAME.unpack(self._blocks.read(_FRAME.size))
            frame = self._blocks.read(n)
            block = _dec.decode(frame) if kind == _MSGPACK else pickle.loads(frame)
            yield block, ids, keys
        ids.done()
        keys.done()

    def _asked(self, id_seen: _Bits) -> _Bits:
        """Of the key checks made so far in spill order, those whose line's id is new."""
        n = self._keys.count
        out = np.zeros((n + 7) // 8, dtype=np.uint8)
        self._asker.seek(0)
        for start in range(0, n, WINDOW):
            seq = np.frombuffer(self._asker.read(8 * min(WINDOW, n - start)), dtype=np.uint64)
            new = ~_bits_at(id_seen, seq)
            _set_bits(out, np.arange(start, start + len(seq), dtype=np.uint64)[new])
        return out


class _Partitions:
    """16-byte values with their place in the sequence, in PARTS files by first byte."""

    def __init__(self, stem: Path) -> None:
        self._stem = stem
        self.count = 0
        self._buffer: list[npt.NDArray[np.void]] = []
        self._buffered = 0

    def add(self, packed: bytes) -> None:
        pairs = np.frombuffer(packed, dtype=np.uint64).reshape(-1, 2)
        n = len(pairs)
        entries = np.empty(n, dtype=_ENTRY)
        entries["hi"], entries["lo"] = pairs[:, 0], pairs[:, 1]
        entries["seq"] = np.arange(self.count, self.count + n, dtype=np.uint64)
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
        part = (entries["hi"] & np.uint64(0xFF)).astype(np.intp)
        order = np.argsort(part, kind="stable")
        entries, part = entries[order], part[order]
        bounds = np.searchsorted(part, np.arange(PARTS + 1))
        for p in range(PARTS):
            lo, hi = bounds[p], bounds[p + 1]
            if hi > lo:
                with open(self._part(p), "ab") as f:
                    f.write(entries[lo:hi].tobytes())

    def resolve(self, prefix: SeenSet, asked: _Bits | None = None) -> _Bits:
        """A bit per entry (by seq): seen in `prefix` or earlier in the sequence. With
        `asked`, only the entries it marks are in the sequence (the others' bits are 0)."""
        seen = np.zeros((self.count + 7) // 8, dtype=np.uint8)
        for p in range(PARTS):
            path = self._part(p)
            if not path.exists():
                continue
            entries = np.fromfile(path, dtype=_ENTRY)
            os.unlink(path)
            if asked is not None:
                entries = entries[_bits_at(asked, entries["seq"])]
            if not len(entries):
                continue
            entries = entries[np.lexsort((entries["seq"], entries["lo"], entries["hi"]))]
            hi, lo = entries["hi"], entries["lo"]
            repeat = prefix.contains(hi, lo)
            repeat[1:] |= (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
            _set_bits(seen, entries["seq"][repeat])
        return seen

    def _part(self, p: int) -> Path:
        return self._stem.with_name(f"{self._stem.name}-{p:03d}")


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


def _count(bits: _Bits) -> int:
    return int(np.bitwise_count(bits).sum(dtype=np.int64))


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
