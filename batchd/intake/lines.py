"""Stream raw lines from a local file (plain or .gz) in bounded memory.

Lines are read in blocks and split on b"\\n"; a line longer than the limit is
reported (as None) and skipped up to its end without being held in memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

MAX_LINE_BYTES = 16 * 1024 * 1024
BLOCK_BYTES = 4 * 1024 * 1024


def open_source(path: str | Path) -> BinaryIO:
    p = Path(path)
    with open(p, "rb") as f:
        magic = f.read(2)
    if p.suffix == ".gz" or magic == b"\x1f\x8b":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


def iter_lines(
    stream: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES, block_bytes: int = BLOCK_BYTES
) -> Iterator[list[bytes | None]]:
    """Yield lists of lines (without b"\\n"); None stands for a line over the limit."""
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
        parts = (carry + block).split(b"\n") if carry else block.split(b"\n")
        carry = parts.pop()
        if not parts or max(map(len, parts)) <= max_line_bytes:  # the usual block: as it is
            out: list[bytes | None] = cast("list[bytes | None]", parts)
        else:
            out = [p if len(p) <= max_line_bytes else None for p in parts]
        if len(carry) > max_line_bytes:
            out.append(None)
            carry = b""
            skipping = True
        if out:
            yield out
    if carry:
        yield [carry if len(carry) <= max_line_bytes else None]
