"""Stream raw lines from a local file (plain or .gz) in bounded memory.

Lines are read in blocks and split on b"\\n"; a line longer than the limit is
reported (as None) and skipped up to its end without being held in memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

MAX_LINE_BYTES = 16 * 1024 * 1024
BLOCK_BYTES = 4 * 1024 * 1024


def open_source(path: str | Path) -> BinaryIO:
    p = Path(path)
    with open(p, "rb") as f:
        magic = f.read(2)
    if p.suffix == ".gz" or magic == b"\x1f\x8b":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


RawBlock = bytes | list[bytes | None]  # whole lines joined by b"\n", or the lines themselves


def iter_lines(
    stream: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES, block_bytes: int = BLOCK_BYTES
) -> Iterator[list[bytes | None]]:
    """Yield lists of lines (without b"\\n"); None stands for a line over the limit."""
    for block in iter_blocks(stream, max_line_bytes, block_bytes):
        yield lines_of(block)


def iter_blocks(
    stream: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES, block_bytes: int = BLOCK_BYTES
) -> Iterator[RawBlock]:
    """`iter_lines`' blocks, a block of lines all within the limit as the bytes they were
    read as (not split: a worker splits it); a block with a line over the limit as a list."""
    carry = b""
    skipping = False  # inside an over-long line: drop bytes until the next newline
    while True:
        block = stream.read(block_bytes)
        if not block:
            break
        if skipping:
            nl = block.find(b"\n")
            if nl < 0:
                continue
            block = block[nl + 1 :]
            skipping = False
        data = carry + block if carry else block
        del block  # held while suspended at a yield otherwise: memory stays at a block or two
        cut = data.rfind(b"\n")
        if cut >= 0:
            whole, carry = data[:cut], data[cut + 1 :]
            del data
            if len(whole) <= max_line_bytes:  # the usual block: no line in it can be too long
                yield whole
            else:
                yield [p if len(p) <= max_line_bytes else None for p in whole.split(b"\n")]
            del whole
        else:
            carry = data
        if len(carry) > max_line_bytes:
            yield [None]
            carry = b""
            skipping = True
    if carry:
        yield [carry if len(carry) <= max_line_bytes else None]


def numbered(blocks: Iterable[RawBlock], first: int = 1) -> Iterator[tuple[int, RawBlock]]:
    """Each block with its first line's number (lines count from `first`)."""
    for block in blocks:
        yield first, block
        first += lines_in(block)


def lines_of(block: RawBlock) -> list[bytes | None]:
    """A block's lines (None: a line over the limit)."""
    if isinstance(block, bytes):
        return block.split(b"\n")  # type: ignore[return-value]  # list is invariant
    return block


def lines_in(block: RawBlock) -> int:
    """How many lines a block holds."""
    return block.count(b"\n") + 1 if isinstance(block, bytes) else len(block)
