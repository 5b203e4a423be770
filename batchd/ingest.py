"""Ingest: stream a source, decode and key each line, dedup in run, look up the cache.

Per-line errors are data: every line ends as a row (invalid, cached, follower or
pending). Valid, unique, uncached requests go to the Chunker. Memory stays
bounded: lines are handled in batches and written out as they go.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec
import pyarrow as pa

from batchd.cache import SqliteCache
from batchd.lines import MAX_LINE_BYTES, iter_lines
from batchd.outcome import INVALID
from batchd.plan import Chunker, Route, RouteError, Router
from batchd.requests import Invalid, Request, parse_request, salted_key
from batchd.seen import SeenSet

# Row states in the lines parts (the final status comes at finalize).
PENDING = "pending"
CACHED = "cached"
CACHE_NONE, CACHE_EXACT, CACHE_IN_RUN = "none", "exact", "in_run"
# Vendor ids of requests whose answers must not enter the cache start with this.
NO_CACHE_PREFIX = "x"

LINES_SCHEMA = pa.schema(
    [
        ("line_no", pa.int64()),
        ("custom_id", pa.string()),
        ("request_key", pa.binary()),
        ("tenant", pa.string()),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("model_requested", pa.string()),
        ("state", pa.string()),
        ("cache", pa.string()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("cached_outcome", pa.binary()),
    ]
)

_decode = msgspec.json.decode
_BOM = b"\xef\xbb\xbf"
_outcome_enc = msgspec.msgpack.Encoder()


class IngestStats(msgspec.Struct, kw_only=True):
    lines: int = 0
    blank: int = 0
    invalid: int = 0
    invalid_by_type: dict[str, int] = {}
    valid: int = 0
    unique: int = 0
    in_run_duplicates: int = 0
    cache_hits: int = 0
    to_send: int = 0
    bytes_read: int = 0


class _Rows:
    """Column lists for one batch of the lines parts."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {name: [] for name in LINES_SCHEMA.names}

    def add(
        self,
        line_no: int,
        custom_id: str,
        key: bytes | None,
        tenant: str,
        tags: dict[str, str],
        model: str,
        state: str,
        cache: str,
        error_type: str | None = None,
        error_message: str | None = None,
        cached_outcome: bytes | None = None,
    ) -> None:
        c = self.cols
        c["line_no"].append(line_no)
        c["custom_id"].append(custom_id)
        c["request_key"].append(key)
        c["tenant"].append(tenant)
        c["tags"].append(tags)
        c["model_requested"].append(model)
        c["state"].append(state)
        c["cache"].append(cache)
        c["error_type"].append(error_type)
        c["error_message"].append(error_message)
        c["cached_outcome"].append(cached_outcome)

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(self.cols, schema=LINES_SCHEMA)


class _NoRows(_Rows):
    """Dry run: rows are counted in the stats, not kept."""

    def __init__(self) -> None:
        self.cols = {"line_no": []}

    def add(self, *args: Any, **kwargs: Any) -> None:
        pass


def _id_digest(custom_id: str) -> bytes:
    return hashlib.blake2b(custom_id.encode(), digest_size=16).digest()


def ingest(
    stream: BinaryIO,
    *,
    router: Router,
    chunker: Chunker,
    cache: SqliteCache | None,
    default_tenant: str,
    run_salt: str,
    write_rows: Callable[[pa.RecordBatch], None] | None,
    on_progress: Callable[[IngestStats], None] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> IngestStats:
    """Run every line of `stream` through decode, parse, route, dedup and cache lookup."""
    stats = IngestStats()
    invalid_types: Counter[str] = Counter()
    seen_keys = SeenSet()
    seen_ids = SeenSet()
    line_no = 0
    for raw_lines in iter_lines(stream, max_line_bytes=max_line_bytes):
        parsed: list[tuple[Request | Invalid, Route | None]] = []
        for raw in raw_lines:
            line_no += 1
            item = _parse_raw(raw, line_no, default_tenant, stats, max_line_bytes)
            if item is None:
                continue
            if type(item) is Request:
                route = router.route(item.model)
                if type(route) is RouteError:
                    item = Invalid(
                        line_no,
                        item.custom_id,
                        route.error_type,
                        route.message,
                        item.tenant,
                        item.tags,
                        item.model,
                    )
                    parsed.append((item, None))
                else:
                    parsed.append((item, route))  # type: ignore[arg-type]
            else:
                parsed.append((item, None))
        stats.lines = line_no
        rows = _Rows() if write_rows is not None else _NoRows()
        _settle_batch(
            parsed, rows, seen_ids, seen_keys, cache, chunker, run_salt, stats, invalid_types
        )
        if write_rows is not None and rows.cols["line_no"]:
            write_rows(rows.batch())
        if on_progress is not None:
            on_progress(stats)
    stats.invalid_by_type = dict(invalid_types)
    return stats


def _parse_raw(
    raw: bytes | None, line_no: int, tenant: str, stats: IngestStats, max_line_bytes: int
) -> Request | Invalid | None:
    if raw is None:
        return Invalid(
            line_no,
            f"line-{line_no}",
            "line_too_long",
            f"line is longer than the limit of {max_line_bytes:,} bytes",
        )
    stats.bytes_read += len(raw) + 1
    if line_no == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        obj = _decode(raw)
    except (UnicodeDecodeError, msgspec.DecodeError) as exc:
        return _undecodable(raw, line_no, exc, stats)
    return parse_request(obj, line_no, tenant)


def _undecodable(raw: bytes, line_no: int, exc: Exception, stats: IngestStats) -> Invalid | None:
    if not raw.strip():
        stats.blank += 1
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Invalid(line_no, f"line-{line_no}", "invalid_utf8", f"line is not UTF-8: {bad}")
    return Invalid(line_no, f"line-{line_no}", "invalid_json", f"line is not JSON: {exc}")


def _settle_batch(
    parsed: list[tuple[Request | Invalid, Route | None]],
    rows: _Rows,
    seen_ids: SeenSet,
    seen_keys: SeenSet,
    cache: SqliteCache | None,
    chunker: Chunker,
    run_salt: str,
    stats: IngestStats,
    invalid_types: Counter[str],
) -> None:
    dup_id = seen_ids.check_add([_id_digest(item.custom_id) for item, _ in parsed])
    keys: list[bytes] = []
    for i, (item, _) in enumerate(parsed):
        if type(item) is Request:
            if dup_id[i]:
                parsed[i] = (
                    Invalid(
                        item.line_no,
                        item.custom_id,
                        "duplicate_custom_id",
                        f"duplicate custom_id {item.custom_id!r}: an earlier line "
                        "has it; ids must be unique in a file",
                        item.tenant,
                        item.tags,
                        item.model,
                    ),
                    None,
                )
                continue
            if not item.cache_ok:
                item.key = salted_key(item.key, f"{run_salt}:{item.line_no}")
            keys.append(item.key)
    is_dup = iter(seen_keys.check_add(keys))
    hits = (
        cache.get_many(
            list({item.key for item, _ in parsed if type(item) is Request and item.cache_ok})
        )
        if cache is not None
        else {}
    )
    for item, route in parsed:
        if type(item) is not Request:
            inv: Invalid = item  # type: ignore[assignment]
            stats.invalid += 1
            invalid_types[inv.error_type] += 1
            rows.add(
                inv.line_no,
                inv.custom_id,
                None,
                inv.tenant,
                inv.tags,
                inv.model,
                INVALID,
                CACHE_NONE,
                inv.error_type,
                inv.error_message,
            )
            continue
        stats.valid += 1
        dup = next(is_dup)
        hit = hits.get(item.key) if item.cache_ok else None
        if hit is not None:
            stats.cache_hits += 1
            if not dup:
                stats.unique += 1
            rows.add(
                item.line_no,
                item.custom_id,
                item.key,
                item.tenant,
                item.tags,
                item.model,
                CACHED,
                CACHE_EXACT,
                cached_outcome=_outcome_enc.encode(hit),
            )
        elif dup:
            stats.in_run_duplicates += 1
            rows.add(
                item.line_no,
                item.custom_id,
                item.key,
                item.tenant,
                item.tags,
                item.model,
                PENDING,
                CACHE_IN_RUN,
            )
        else:
            stats.unique += 1
            stats.to_send += 1
            cacheable = item.cache_ok and cache is not None
            vendor_id = item.key.hex() if cacheable else NO_CACHE_PREFIX + item.key.hex()
            assert route is not None
            chunker.add(route, vendor_id, item)
            rows.add(
                item.line_no,
                item.custom_id,
                item.key,
                item.tenant,
                item.tags,
                item.model,
                PENDING,
                CACHE_NONE,
            )
