"""Ingest: stream a source, decode and key each line, dedup in run, look up the cache.

Per-line errors are data: every line ends as a row (invalid, cached, follower or
pending). Valid, unique, uncached requests go to the Chunker. Memory stays
bounded: lines are handled in batches and written out as they go.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any, BinaryIO

import msgspec
import pyarrow as pa

from batchd.cache.base import Cache
from batchd.cache.semantic.matcher import HIT, Match, Query, SemanticCache
from batchd.core.heap import return_big_buffers
from batchd.errors import BatchdError
from batchd.intake.column_settle import settle_columns
from batchd.intake.decode import INTERNAL_ERROR, ParseContext, Parsed, paused_gc
from batchd.intake.lines import MAX_LINE_BYTES, iter_blocks, numbered
from batchd.intake.parse_pool import parse_blocks
from batchd.intake.records import Block
from batchd.intake.seen import Seen, new_seen
from batchd.intake.spans import Job, local_file, numbered_spans, reading
from batchd.intake.spill import Spill
from batchd.intake.tally import (
    IngestStats,
    chunk_write_fault,
    count_invalid,
    duplicate_id,
)
from batchd.outcome import INVALID
from batchd.planning.chunking import Chunker
from batchd.planning.routing import Router

log = logging.getLogger("batchd.intake")
EMPTY_INPUT = "The input is empty: it holds no lines, so there is nothing to run."
EMPTY_HINT = "Give a JSONL file with one request per line."

# Row states in the lines parts (the final status comes at finalize).
PENDING = "pending"
CACHED = "cached"
CACHE_NONE, CACHE_EXACT, CACHE_IN_RUN = "none", "exact", "in_run"
CACHE_SEMANTIC = "semantic"  # answered by a cached request that means the same (cache.semantic)

LINES_PATH = "lines.parquet"  # a run's lines part, on its blobs
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
        ("endpoint", pa.string()),  # a valid line's endpoint (NULL: invalid)
        ("encoding_format", pa.string()),  # an embeddings line's, for the OpenAI export
        # semantic cache: the entry matched, how alike, what became of it (semantic.HIT,
        # VERIFY, CANDIDATE) and the store's scope (for the labels finalize records)
        ("sem_source_key", pa.binary()),
        ("similarity", pa.float64()),
        ("sem_check", pa.string()),
        ("sem_scope", pa.binary()),
    ]
)

_outcome_enc = msgspec.msgpack.Encoder()
# in-run dedup sets held in memory; past this, the rest of the input spills to disk
DEDUP_MEMORY_BYTES = 32 << 20
DIGEST_BYTES = 16  # a set's entry: an id digest or a request key


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
        line: Parsed | None = None,
        sem: Match | None = None,
    ) -> None:
        """`line`: a valid line, whose endpoint the row keeps."""
        c = self.cols
        c["endpoint"].append(line.endpoint if line is not None else None)
        c["encoding_format"].append(line.encoding_format if line is not None else None)
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
        c["sem_source_key"].append(sem.source_key if sem else None)
        c["similarity"].append(sem.similarity if sem else None)
        c["sem_check"].append(sem.kind if sem else None)
        c["sem_scope"].append(sem.scope if sem else None)

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(self.cols, schema=LINES_SCHEMA)


class _NoRows(_Rows):
    """Dry run: rows are counted in the stats, not kept."""

    def __init__(self) -> None:
        self.cols = {"line_no": []}

    def add(self, *args: Any, **kwargs: Any) -> None:
        pass


def ingest(
    stream: BinaryIO,
    *,
    router: Router,
    chunker: Chunker,
    cache: Cache | None,
    default_tenant: str,
    run_salt: str,
    write_rows: Callable[[pa.RecordBatch], None] | None,
    on_progress: Callable[[IngestStats], None] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    workers: int = 1,
    semantic: SemanticCache | None = None,
    dedup_memory_bytes: int = DEDUP_MEMORY_BYTES,
) -> IngestStats:
    """Every line of `stream` through parse (in `workers` processes), dedup and cache lookup.

    With `semantic` (and a cache), leaders with no exact hit are looked up by meaning too.
    Once the in-run dedup sets hold `dedup_memory_bytes`, the rest of the input goes to
    disk (the temp dir: TMPDIR) and is settled in epochs: see intake.spill.
    """
    return_big_buffers()  # the RSS of a long ingest stays flat (batchd.core.heap)
    semantic = semantic if cache is not None else None
    plan = semantic.plan if semantic is not None else None
    ctx = ParseContext(
        router,
        default_tenant,
        run_salt,
        cache is not None,
        max_line_bytes,
        plan,
        sizes_only=chunker.dry_run,  # a dry run counts each line's bytes, writes none
        columns=chunker.dry_run and write_rows is None,  # and with no rows, settles columns
    )
    sem_hits: dict[bytes, Match] = {}  # request key -> its semantic hit, for its followers
    stats = IngestStats()
    invalid_types: Counter[str] = Counter()
    seen_ids = new_seen()
    seen_keys = new_seen()
    budget = dedup_memory_bytes // DIGEST_BYTES  # entries in the two sets
    spill: Spill | None = None

    def settle(block: Block, ids: Seen, keys: Seen) -> None:
        if block.columns is not None:  # a plan's block of plain lines
            settle_columns(block.columns, ids, keys, cache, chunker, stats, invalid_types)
        else:
            rows = _Rows() if write_rows is not None else _NoRows()
            _settle(
                block.records, rows, ids, keys, cache, chunker, stats, invalid_types, semantic,
                sem_hits,
            )  # fmt: skip
            if write_rows is not None and rows.cols["line_no"]:
                write_rows(rows.batch())
        if on_progress is not None:
            on_progress(stats)

    blocks: Iterable[Job]
    local = workers > 1 and local_file(stream)  # workers read their own blocks
    if local:
        blocks = numbered_spans(stream, max_line_bytes)
    else:
        blocks = numbered(iter_blocks(stream, max_line_bytes=max_line_bytes))
    # No cyclic collection for the whole pass: a block's records hold no cycles, and one
    # pause per block let a collection run between blocks, walking every object alive.
    with paused_gc(), ExitStack() as on_exit:
        if local:
            on_exit.enter_context(reading(stream))
        for block in parse_blocks(blocks, ctx, workers):
            stats.blank += block.blank
            stats.bytes_read += block.bytes_read
            stats.lines += len(block.columns.custom_ids if block.columns else block.records)
            if spill is None and len(seen_ids) + len(seen_keys) >= budget:
                log.info("in-run dedup past its memory: the rest is settled from disk")
                spill = on_exit.enter_context(Spill(seen_ids, seen_keys))
                seen_ids, seen_keys = new_seen(), new_seen()  # on disk now: their memory freed
            if spill is None:
                settle(block, seen_ids, seen_keys)
                del block  # not held while the next one is decoded: one block alive
            else:  # settled once its epoch's answers are known (intake.spill)
                spill.add(block)
                del block  # on disk now: not held while the ready blocks are decoded
                if on_progress is not None:
                    on_progress(stats)
                for _ in range(2):  # the closed epochs' blocks, while the next is read
                    ready = spill.ready()
                    if ready is None:
                        break
                    settle(*ready)
                    del ready  # one decoded block alive at a time: memory stays flat
        if spill is not None:
            for ready in spill.finish():
                settle(*ready)
                del ready
    stats.invalid_by_type = dict(invalid_types)
    if semantic is not None:
        stats.semantic_embedding = semantic.embedder.spend.as_dict()
    if stats.lines == 0:
        raise BatchdError(EMPTY_INPUT, EMPTY_HINT)
    return stats


def _settle(
    records: list[Parsed],
    rows: _Rows,
    seen_ids: Seen,
    seen_keys: Seen,
    cache: Cache | None,
    chunker: Chunker,
    stats: IngestStats,
    invalid_types: Counter[str],
    semantic: SemanticCache | None = None,
    sem_hits: dict[bytes, Match] | None = None,
) -> None:
    """What needs the whole file: duplicate ids, in-run dedup, cache lookup, chunking."""
    dup_id = seen_ids.check_add([r.id_digest for r in records])
    if not any(dup_id):  # the usual block: no id seen before
        keys = [r.key for r in records if r.error_type is None]
    else:
        keys = []
        for r, dup in zip(records, dup_id, strict=True):
            if r.error_type is None:
                if dup:
                    r.error_type = "duplicate_custom_id"
                    r.error_message = duplicate_id(r.custom_id)
                else:
                    keys.append(r.key)
    dups = seen_keys.check_add(keys)
    is_dup = iter(dups)
    hits = (
        cache.get_many(list({r.key for r in records if r.error_type is None and r.cache_ok}))
        if cache is not None
        else {}
    )
    sem_hits = {} if sem_hits is None else sem_hits
    queries: list[Query] = []
    matches: dict[bytes, Match] = {}
    if semantic is not None:
        queries = _semantic_queries(records, dups, hits)
        if queries:
            matches, vectors = semantic.lookup(queries)
    keep = type(rows) is not _NoRows  # a dry run keeps no rows: no call per line to make
    valid = unique = cache_hits = semantic_hits = in_run = to_send = checks = 0
    for r in records:
        if r.error_type is not None:
            _invalid(rows, stats, invalid_types, r, r.error_type, r.error_message)
            continue
        valid += 1
        dup = next(is_dup)
        key = r.key
        hit = hits.get(key) if hits and r.cache_ok else None
        sem = sem_hits.get(key) or matches.get(key) if semantic is not None else None
        if hit is None and sem is not None and sem.kind == HIT and sem.outcome is not None:
            sem_hits[key] = sem
            semantic_hits += 1
            unique += not dup
            rows.add(
                r.line_no, r.custom_id, key, r.tenant, r.tags, r.model, CACHED,
                CACHE_SEMANTIC, cached_outcome=_outcome_enc.encode(sem.outcome), sem=sem,
            )  # fmt: skip
        elif hit is not None:
            cache_hits += 1
            unique += not dup
            rows.add(
                r.line_no, r.custom_id, key, r.tenant, r.tags, r.model, CACHED, CACHE_EXACT,
                cached_outcome=_outcome_enc.encode(hit), line=r,
            )  # fmt: skip
        elif dup:
            in_run += 1
            if r.deadline_at is not None:  # its answer is its leader's: due as early
                chunker.follower_deadline(r.model, key, r.deadline_at)
            if keep:
                rows.add(
                    r.line_no, r.custom_id, key, r.tenant, r.tags, r.model, PENDING,
                    CACHE_IN_RUN, line=r,
                )  # fmt: skip
        else:
            problem = _add_to_chunk(chunker, r)
            if problem is not None:  # the line's own fault: its row says so, the run goes on
                valid -= 1
                _invalid(rows, stats, invalid_types, r, INTERNAL_ERROR, problem)
                continue
            unique += 1
            to_send += 1
            checks += sem is not None
            if keep:
                rows.add(
                    r.line_no, r.custom_id, key, r.tenant, r.tags, r.model, PENDING, CACHE_NONE,
                    line=r, sem=sem,
                )  # fmt: skip
    stats.valid += valid
    stats.unique += unique
    stats.cache_hits += cache_hits
    stats.semantic_hits += semantic_hits
    stats.in_run_duplicates += in_run
    stats.to_send += to_send
    stats.semantic_checks += checks
    if semantic is not None and queries:  # the sent ones become entries for later runs
        sent = [i for i, q in enumerate(queries) if q.key not in sem_hits]
        semantic.remember([queries[i] for i in sent], vectors[sent])


def _semantic_queries(records: list[Parsed], dups: list[bool], hits: dict) -> list[Query]:
    """Leaders with no exact hit that may be matched by meaning (one query per key)."""
    out: list[Query] = []
    dup = iter(dups)
    for r in records:
        if r.error_type is not None:
            continue
        if not next(dup) and r.sem_scope and r.key not in hits:
            out.append(Query(r.key, r.sem_scope, r.sem_text))
    return out


def _add_to_chunk(chunker: Chunker, r: Parsed) -> str | None:
    """Hand one request to the chunker; the message of a fault that is this line's own.

    An OSError (disk full, storage down) is not the line's: it stops ingest, which is
    retried as a whole.
    """
    try:
        chunker.add(
            r.backend,
            r.model,
            r.vendor_line,
            r.max_tokens,
            r.deadline_at,
            r.key,
            r.options,
            r.prompt_tokens,
            r.endpoint,
            r.vendor_bytes,
        )
    except OSError:
        raise
    except Exception as exc:
        log.debug("line %d: %s in chunk write", r.line_no, type(exc).__name__, exc_info=exc)
        return chunk_write_fault(exc)
    return None


def _invalid(
    rows: _Rows,
    stats: IngestStats,
    invalid_types: Counter[str],
    r: Parsed,
    error_type: str,
    message: str | None,
) -> None:
    """Count an invalid line (the first few kept as examples) and give it its row."""
    count_invalid(stats, invalid_types, r.line_no, r.custom_id, error_type, message)
    rows.add(
        r.line_no,
        r.custom_id,
        None,
        r.tenant,
        r.tags,
        r.model,
        INVALID,
        CACHE_NONE,
        error_type,
        message,
    )
