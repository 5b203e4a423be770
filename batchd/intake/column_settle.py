"""A plan's block of Columns settled in bulk: what ingest._settle does line by line.

Every line of a Columns block is valid, cacheable, has no deadline, and goes to one vendor
target (intake.column_lane); with no rows to keep (a plan), all that is left per line is:
a repeated custom_id (the line invalid), an in-run duplicate, a cache hit, or a request
for the chunker. Ids and keys are checked per block (numpy), the chunker is handed the
leaders in line order, and the counts come out as `_settle`'s would.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from batchd.cache.base import Cache
from batchd.intake.records import INTERNAL_ERROR, Columns
from batchd.intake.seen import Seen
from batchd.intake.tally import IngestStats, chunk_write_fault, count_invalid, duplicate_id
from batchd.planning.chunking import Chunker
from batchd.requests import CHAT, KEY_BYTES


def settle_columns(
    cols: Columns,
    seen_ids: Seen,
    seen_keys: Seen,
    cache: Cache | None,
    chunker: Chunker,
    stats: IngestStats,
    invalid_types: Counter[str],
) -> None:
    dup_id = seen_ids.check_add_packed(cols.id_digests)
    packed = cols.keys
    if dup_id.any():  # the keys of the lines whose id is new
        packed = np.frombuffer(packed, dtype=np.uint8).reshape(-1, KEY_BYTES)[~dup_id].tobytes()
    dup_key = seen_keys.check_add_packed(packed)
    hits = {}
    if cache is not None:
        hits = cache.get_many(
            list({packed[i : i + KEY_BYTES] for i in range(0, len(packed), KEY_BYTES)})
        )
    model_nos = np.frombuffer(cols.model_nos, dtype=np.uint32).tolist()
    sizes = np.frombuffer(cols.vendor_bytes, dtype=np.int64).tolist()
    max_tokens = np.frombuffer(cols.max_tokens, dtype=np.int64).tolist()
    models, backends, keys = cols.models, cols.backends, cols.keys
    first = cols.first_line_no
    add = chunker.add
    valid = unique = cache_hits = in_run = to_send = 0
    repeated_id = dup_id.tolist()
    leader_of = iter((~dup_key).tolist())  # of the lines whose id is new
    for i, repeated in enumerate(repeated_id):
        if repeated:
            custom_id = cols.custom_ids[i]
            count_invalid(
                stats, invalid_types, first + i, custom_id, "duplicate_custom_id",
                duplicate_id(custom_id),
            )  # fmt: skip
            continue
        leader = next(leader_of)
        valid += 1
        key = keys[KEY_BYTES * i : KEY_BYTES * (i + 1)]
        if hits and hits.get(key) is not None:
            cache_hits += 1
            unique += leader
        elif not leader:
            in_run += 1
        else:
            m = model_nos[i]
            try:
                add(backends[m], models[m], b"", max_tokens[i], None, key, None, -1, CHAT, sizes[i])
            except OSError:  # not the line's: ingest stops, and is retried as a whole
                raise
            except Exception as exc:  # the line's own fault: its row says so
                valid -= 1
                count_invalid(
                    stats, invalid_types, first + i, cols.custom_ids[i], INTERNAL_ERROR,
                    chunk_write_fault(exc),
                )  # fmt: skip
                continue
            unique += 1
            to_send += 1
    stats.valid += valid
    stats.unique += unique
    stats.cache_hits += cache_hits
    stats.in_run_duplicates += in_run
    stats.to_send += to_send
