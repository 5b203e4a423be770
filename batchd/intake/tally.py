"""What ingest counts: the run's IngestStats, and the reasons it gives lines of its own
finding (a repeated custom_id, a fault writing a chunk) with every path that settles lines."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec


class IngestStats(msgspec.Struct, kw_only=True):
    lines: int = 0
    blank: int = 0  # blank lines: each has an invalid row (blank_line), counted in invalid too
    invalid: int = 0
    invalid_by_type: dict[str, int] = {}
    valid: int = 0
    unique: int = 0
    in_run_duplicates: int = 0
    cache_hits: int = 0
    semantic_hits: int = 0  # lines answered by the semantic cache (not in cache_hits)
    semantic_checks: int = 0  # sent lines whose answer is compared with a cached one
    # what the semantic cache's embedder bought at ingest (cache.embedders.Spend.as_dict);
    # empty: no semantic cache
    semantic_embedding: dict[str, float] = {}
    to_send: int = 0
    bytes_read: int = 0
    # the first few invalid lines: [line_no, custom_id, error_type, error_message]
    invalid_examples: list[list[Any]] = []


INVALID_EXAMPLES = 5  # invalid lines kept in IngestStats to show (all are rows)


def count_invalid(
    stats: IngestStats,
    invalid_types: Counter[str],
    line_no: int,
    custom_id: str,
    error_type: str,
    message: str | None,
) -> None:
    """Count an invalid line, the first few kept as examples."""
    stats.invalid += 1
    invalid_types[error_type] += 1
    if len(stats.invalid_examples) < INVALID_EXAMPLES:
        stats.invalid_examples.append([line_no, custom_id, error_type, message])


def duplicate_id(custom_id: str) -> str:
    """The reason of a line whose custom_id an earlier line has."""
    return (
        f"duplicate custom_id {custom_id!r}: an earlier line has it; ids must be unique in a file"
    )


def chunk_write_fault(exc: Exception) -> str:
    """The reason of a line whose chunk write failed on the line itself (not on storage)."""
    return (
        f"batchd failed on this line ({type(exc).__name__} in chunk write: "
        f"{str(exc)[:300]}); the rest of the run went on. Please report it with the line; "
        "BATCHD_DEBUG=1 logs the traceback"
    )
