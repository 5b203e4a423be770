"""Outcome parts: the final outcomes of one chunk, as framed msgpack records on blobs."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import msgspec

from batchd.outcome import Outcome

_FRAME = struct.Struct("<I")
_FRAME_RECORDS = 1024
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(list[tuple[bytes, Outcome]])


def write_outcomes(out: BinaryIO, items: Iterable[tuple[bytes, Outcome]]) -> int:
    n = 0
    frame: list[tuple[bytes, Outcome]] = []
    for item in items:
        frame.append(item)
        n += 1
        if len(frame) >= _FRAME_RECORDS:
            _write_frame(out, frame)
            frame = []
    if frame:
        _write_frame(out, frame)
    return n


def _write_frame(out: BinaryIO, frame: list[tuple[bytes, Outcome]]) -> None:
    data = _enc.encode(frame)
    out.write(_FRAME.pack(len(data)))
    out.write(data)


def read_outcomes(src: BinaryIO) -> Iterator[tuple[bytes, Outcome]]:
    while header := src.read(_FRAME.size):
        (size,) = _FRAME.unpack(header)
        yield from _dec.decode(src.read(size))


class _VendorId(msgspec.Struct):
    custom_id: str


_id_dec = msgspec.json.Decoder(_VendorId)


def chunk_lines(src: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(vendor custom_id, raw line with newline) for every line of a chunk file."""
    for line in src:
        if line.strip():
            yield _id_dec.decode(line).custom_id, line
