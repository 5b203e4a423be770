"""What stage one of ingest hands on: a Parsed record per line, a Block of them, the
ParseContext a worker parses with, and the helpers every parse path builds records with."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import msgspec

from batchd.cache.semantic.scope import SemanticPlan
from batchd.planning.routing import Router
from batchd.requests import CHAT

BLANK_LINE = "blank_line"
INTERNAL_ERROR = "internal_error"


class Parsed(msgspec.Struct, array_like=True, gc=False):
    line_no: int
    custom_id: str
    id_digest: bytes
    tenant: str
    tags: dict[str, str]
    model: str
    error_type: str | None = None  # set: the line is invalid
    error_message: str | None = None
    key: bytes = b""
    cache_ok: bool = True
    backend: str = ""
    vendor_line: bytes = b""  # its line of a chunk file, newline included
    max_tokens: int = 0
    deadline_at: float | None = None
    options: list[bytes] = []  # an alias: one chunk line per target ("" = target can't take it)
    prompt_tokens: int = -1  # counted by the vLLM model's tokenizer, when it has a vLLM target
    endpoint: str = CHAT  # chat | embeddings | responses | completions: chunks hold one
    encoding_format: str | None = None  # an embeddings line's, for the OpenAI-format export
    sem_scope: bytes = b""  # semantic cache: the scope it may match in (b"": not matched)
    sem_text: str = ""  # and the text compared
    vendor_bytes: int = -1  # a dry run's: vendor_line's size, the line not kept (-1: kept)


class Columns(msgspec.Struct, array_like=True, gc=False):
    """A plan's block whose every line is a plain chat line on a direct vendor model, as
    columns (intake.column_lane): each line's record would be the express lane's, with
    the fields below and the defaults of a cacheable chat line with no deadline."""

    first_line_no: int
    custom_ids: list[str]
    id_digests: bytes  # 16 bytes a line
    keys: bytes  # 16 bytes a line
    model_nos: bytes  # uint32 a line: its index in models (and backends)
    models: list[str]
    backends: list[str]
    vendor_bytes: bytes  # int64 a line: its vendor line's size, newline included
    max_tokens: bytes  # int64 a line (0: not given)


class Block(msgspec.Struct, array_like=True, gc=False):
    records: list[Parsed]
    blank: int  # of the records, how many are blank lines
    bytes_read: int
    columns: Columns | None = None  # set: the block's lines are these (records is empty)


@dataclass(frozen=True)
class ParseContext:
    router: Router
    default_tenant: str
    run_salt: str
    use_cache: bool
    max_line_bytes: int
    semantic: SemanticPlan | None = None  # lines matched by meaning (semantic cache)
    # a dry run (plan): a valid line's vendor line is measured, not handed on
    sizes_only: bool = False
    # and its rows are not kept: a block of plain lines may come back as Columns
    columns: bool = False


def digest(text: str) -> bytes:
    """A custom_id's 16-byte digest (duplicate ids are found on these)."""
    h = _ID_HASH.copy()  # a fresh BLAKE2b-128, without parsing its settings per id
    h.update(text.encode())
    return h.digest()


_ID_HASH = hashlib.blake2b(digest_size=16)


def invalid(
    line_no: int,
    custom_id: str,
    error_type: str,
    message: str,
    tenant: str = "",
    tags: dict[str, str] | None = None,
    model: str = "",
) -> Parsed:
    return Parsed(
        line_no, custom_id, digest(custom_id), tenant, tags or {}, model, error_type, message
    )


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection while a block's records are built: they hold no cycles, and a
    collection every few hundred allocations would walk every object alive, again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
