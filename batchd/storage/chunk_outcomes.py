"""Outcome parts: the final outcomes of one chunk, as framed records on blobs.

A part is a run of frames, each a 4-byte little-endian length and its payload. A frame
written now holds up to ARROW_FRAME_RECORDS outcomes as one Arrow IPC stream of a keyed
batch (storage.arrow_outcomes.KEYED_SCHEMA), so finalize reads a chunk's outcomes as
columns with no per-outcome decoding. Parts written before hold msgpack frames (a list of
(key, Outcome) pairs); both are read, even mixed in one part (an IPC stream starts with
0xFFFFFFFF, a msgpack list never does). A part may be appended to frame by frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import msgspec
import pyarrow as pa

from batchd.outcome import Outcome
from batchd.storage.arrow_outcomes import KEY, KEYED_SCHEMA, keyed_batch, outcomes_of

_FRAME = struct.Struct("<I")
ARROW_FRAME_RECORDS = 8192
_IPC_START = b"\xff\xff\xff\xff"
_dec = msgspec.msgpack.Decoder(list[tuple[bytes, Outcome]])


def write_outcomes(out: BinaryIO, items: Iterable[tuple[bytes, Outcome]]) -> int:
    n = 0
    keys: list[bytes] = []
    outcomes: list[Outcome] = []
    for key, outcome in items:
        keys.append(key)
        outcomes.append(outcome)
        n += 1
        if len(keys) >= ARROW_FRAME_RECORDS:
            _write_frame(out, keys, outcomes)
            keys, outcomes = [], []
    if keys:
        _write_frame(out, keys, outcomes)
    return n


def _write_frame(out: BinaryIO, keys: list[bytes], outcomes: list[Outcome]) -> None:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, KEYED_SCHEMA) as writer:
        writer.write_batch(keyed_batch(keys, outcomes))
    data = sink.getvalue()
    out.write(_FRAME.pack(data.size))
    out.write(memoryview(data))


def read_outcome_batches(src: BinaryIO) -> Iterator[pa.RecordBatch]:
    """Every frame of a part as a keyed batch (KEYED_SCHEMA), in order."""
    while header := src.read(_FRAME.size):
        (size,) = _FRAME.unpack(header)
        data = src.read(size)
        if data.startswith(_IPC_START):
            yield from pa.ipc.open_stream(pa.py_buffer(data))
        else:  # a msgpack frame, written before outcome parts were columns
            pairs = _dec.decode(data)
            yield keyed_batch([k for k, _ in pairs], [o for _, o in pairs])


def read_outcomes(src: BinaryIO) -> Iterator[tuple[bytes, Outcome]]:
    """Every (key, Outcome) of a part, in order (the per-outcome readers)."""
    for batch in read_outcome_batches(src):
        keys = batch.column(KEY).to_pylist()
        yield from zip(keys, outcomes_of(batch.drop_columns([KEY])), strict=True)


class _VendorId(msgspec.Struct):
    custom_id: str


_id_dec = msgspec.json.Decoder(_VendorId)


def chunk_lines(src: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(vendor custom_id, raw line with newline) for every line of a chunk file."""
    for line in src:
        if line.strip():
            yield _id_dec.decode(line).custom_id, line
