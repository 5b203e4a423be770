"""The C column lane (intake/_lane.c): a plan's block of plain chat lines read in one call.

`take` hands the C lane a block of lines joined by b"\\n" and gets back, when it takes every
line, what `ColumnLane.take_block` would have appended for them: ids and their digests,
keys, each line's model (as its index in the block's models), its key material's size,
max_tokens and what it asks for beyond chat. The C lane takes only a line it fully reads
(one of the three plain shapes, every key known and given once, sampling values that are
scalars or lists of scalars), so whatever it takes, the typed lane takes with the very same
values; at its first other line it stops, and the Python lane decides the block. Without a
C compiler at install there is no C lane (`AVAILABLE` is False) and the Python lane does it
all, only slower.
"""

from __future__ import annotations

from typing import Any

import msgspec

from batchd.core.fields import MAX_TOKENS_LIMIT
from batchd.intake.screen import MAX_DEPTH
from batchd.requests import CHAT, canonical_json

_lane: Any
try:
    from batchd.intake import _lane  # type: ignore[attr-defined,no-redef]
except ImportError:  # no compiler at install: the Python lane only
    _lane = None

AVAILABLE = _lane is not None
ASKS_N, ASKS_SEED = 1, 2  # bits of `Taken.asks`: more than one choice; a seed


class Taken(msgspec.Struct, array_like=True, gc=False):
    """A block's lines as the C lane read them: one entry (or packed value) a line."""

    custom_ids: list[str]
    id_digests: bytes  # 16 bytes a line (records.digest)
    keys: bytes  # 16 bytes a line (requests.scoped_key of the line's tenant, chat)
    model_idx: bytes  # uint32 a line: its model's index in models
    models: list[str]  # the block's models, in the order they first appear
    material_bytes: bytes  # int64 a line: the size of its body's canonical JSON
    max_tokens: bytes  # int64 a line (0: not given)
    asks: bytes  # uint8 a line: ASKS_N | ASKS_SEED


def _canon_number(token: bytes) -> bytes:
    """A JSON number other than a plain integer as canonical_json writes it (msgspec's
    decode then encode), for the C lane to copy into the key material."""
    return canonical_json(msgspec.json.decode(token))


def take(block: bytes, first_line_no: int, tenant: str) -> Taken | None:
    """The block's lines (numbered from first_line_no; `tenant` for a line that names none)
    when the C lane takes every one of them; else None (and always None without it)."""
    if _lane is None:
        return None
    got = _lane.take(block, first_line_no, tenant, CHAT, MAX_TOKENS_LIMIT, MAX_DEPTH, _canon_number)
    return None if got is None else Taken(*got)


def blake2b_16(data: bytes) -> bytes:
    """The C lane's BLAKE2b-128 (for the tests: it must be hashlib's)."""
    assert _lane is not None
    return bytes(_lane.blake2b_16(data))


def count_newlines(buf: bytearray, length: int) -> int:
    """The b"\\n" in buf's first `length` bytes (memchr in C; bytes.count without it)."""
    if _lane is None:
        return buf.count(b"\n", 0, length)
    return int(_lane.count_newlines(buf, length))
