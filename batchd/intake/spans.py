"""A local file's blocks as spans (offset, length) that ingest workers read themselves.

Handing a worker its block's bytes costs the reader a copy into a fresh buffer, another to
join the line cut at the block's end, another to slice it, and a trip through the worker's
pipe. A plain local file can be read where it is parsed: this process only finds where each
block ends (its last newline) and how many lines it holds, in one reused buffer, and the
worker reads the span with pread. The blocks, and so their lines and numbers, are the ones
`lines.iter_blocks` yields; a line longer than a block, or a line limit below the block
size, hands the rest of the file to `iter_blocks`, which deals with over-long lines.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import msgspec

from batchd.intake.lines import BLOCK_BYTES, RawBlock, iter_blocks, numbered
from batchd.intake.native_lane import count_newlines


class Span(msgspec.Struct, array_like=True, frozen=True):
    """Whole lines of a local file: `length` bytes from `offset`, its last newline excluded."""

    path: str
    dev: int  # the file's identity: a worker reading it by path checks it is the same file
    ino: int
    offset: int
    length: int


Job = tuple[int, RawBlock | Span]  # a block's first line number, and its lines (or where)

_fds: dict[tuple[int, int], int] = {}  # (dev, ino) -> an open descriptor, in this process


def local_file(stream: Any) -> bool:
    """Whether the stream is a plain regular file read from its start (a .gz, S3 or pipe
    stream is read as a stream)."""
    if type(stream) is not io.BufferedReader or not isinstance(stream.raw, io.FileIO):
        return False
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and stream.tell() == 0
    except (OSError, ValueError):
        return False


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@contextmanager
def reading(stream: BinaryIO) -> Iterator[None]:
    """While open, this process (and a worker forked from it) reads spans of the stream's
    file with the stream's own descriptor."""
    fd = stream.fileno()
    ident = _ident(fd)
    _fds[ident] = fd
    try:
        yield
    finally:
        if _fds.get(ident) == fd:
            del _fds[ident]


def numbered_spans(
    stream: BinaryIO, max_line_bytes: int, block_bytes: int = BLOCK_BYTES
) -> Iterator[Job]:
    """Every block of a local file (see `local_file`) with its first line number, as Spans
    (read them inside `reading(stream)`)."""
    fd = stream.fileno()
    dev, ino = _ident(fd)
    first, offset = 1, 0
    if max_line_bytes < block_bytes:  # a block may hold a line over the limit
        yield from _stream_from(stream, offset, first, max_line_bytes)
        return
    buf = bytearray(block_bytes)
    while True:
        n = _read_into(fd, buf, offset)
        if n == 0:
            return
        cut = buf.rfind(b"\n", 0, n) if n == block_bytes else n
        if cut < 0:  # a line longer than a block
            yield from _stream_from(stream, offset, first, max_line_bytes)
            return
        if n < block_bytes and buf[n - 1] == 0x0A:  # the file's last line ends in "\n"
            cut = n - 1
        yield first, Span(stream.name, dev, ino, offset, cut)
        first += count_newlines(buf, cut) + 1
        offset += cut + 1
        if n < block_bytes:
            return


def _stream_from(stream: BinaryIO, offset: int, first: int, max_line_bytes: int) -> Iterator[Job]:
    stream.seek(offset)
    return numbered(iter_blocks(stream, max_line_bytes=max_line_bytes), first)


def _read_into(fd: int, buf: bytearray, offset: int) -> int:
    """Fill buf from offset (less only at the end of the file); the bytes read."""
    view, n = memoryview(buf), 0
    while n < len(buf):
        got = os.preadv(fd, [view[n:]], offset + n)
        if got == 0:
            break
        n += got
    return n


def read_span(span: Span) -> bytes:
    """A span's bytes, read with this process's descriptor for its file (opened by path, and
    checked to be the same file, when this process has none)."""
    ident = (span.dev, span.ino)
    fd = _fds.get(ident)
    if fd is None:
        fd = os.open(span.path, os.O_RDONLY | os.O_CLOEXEC)
        if _ident(fd) != ident:
            os.close(fd)
            raise OSError(f"{span.path} is no longer the file being read")
        _fds[ident] = fd
    data = os.pread(fd, span.length, span.offset)
    while len(data) < span.length:  # pread may return less; the file shrinking: an error
        more = os.pread(fd, span.length - len(data), span.offset + len(data))
        if not more:
            raise OSError(f"{span.path} was cut short while being read")
        data += more
    return data


def raw_of(block: RawBlock | Span) -> RawBlock:
    """A job's lines: read when they are a span."""
    return read_span(block) if isinstance(block, Span) else block
