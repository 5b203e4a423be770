"""A plan's block of Columns settled in bulk: what ingest._settle does line by line.

Every line of a Columns block is valid, cacheable, has no deadline, and goes to one vendor
target (intake.column_lane); with no rows to keep (a plan), all that is left per line is:
a repeated custom_id (the line invalid), an in-run duplicate, a cache hit, or a request
for the chunker. Ids and keys are checked per block, the chunker is handed the leaders
all at once, in line order (`Chunker.add_many`), and the counts come out as `_settle`'s
would. Every line is valid and a plan writes no chunk bytes, so no line's fault can arise
here (the per-line path's chunk-write barrier has nothing to catch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from batchd.cache.base import Cache
from batchd.intake.records import Columns
from batchd.intake.seen import Seen
from batchd.intake.tally import IngestStats, count_invalid, duplicate_id
from batchd.planning.chunking import Chunker
from batchd.requests import KEY_BYTES


class _Keys(Sequence[bytes]):
    """A block's keys for Cache.get_many, each once: made only if the cache reads them (an
    empty cache answers without)."""

    def __init__(self, packed: bytes) -> None:
        self._packed = packed
        self._keys: list[bytes] | None = None

    def _all(self) -> list[bytes]:
        if self._keys is None:
            self._keys = np.unique(np.frombuffer(self._packed, f"V{KEY_BYTES}")).tolist()
        return self._keys

    def __bool__(self) -> bool:
        return bool(self._packed)

    def __len__(self) -> int:
        return len(self._all())

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        return self._all()[i]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._all())


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
    if cache is not None and packed:
        hits = cache.get_many(_Keys(packed))
    repeated = np.flatnonzero(dup_id).tolist()
    for i in repeated:
        custom_id = cols.custom_ids[i]
        count_invalid(
            stats, invalid_types, cols.first_line_no + i, custom_id, "duplicate_custom_id",
            duplicate_id(custom_id),
        )  # fmt: skip
    fresh = np.flatnonzero(~dup_id) if repeated else np.arange(len(dup_id))
    leader = ~dup_key  # of the lines whose id is new
    hit = np.zeros(len(fresh), dtype=bool)
    if hits:
        spans = range(0, len(packed), KEY_BYTES)
        hit = np.array([hits.get(packed[j : j + KEY_BYTES]) is not None for j in spans], bool)
    send = leader & ~hit
    at = fresh[send]
    model_nos = np.frombuffer(cols.model_nos, dtype=np.uint32)[at]
    sizes = np.frombuffer(cols.vendor_bytes, dtype=np.int64)[at]
    max_tokens = np.frombuffer(cols.max_tokens, dtype=np.int64)[at]
    keys = np.frombuffer(packed, dtype=np.uint8).reshape(-1, KEY_BYTES)[send].tobytes()
    routes = list(zip(cols.backends, cols.models, strict=True))
    chunker.add_many(routes, model_nos, sizes, max_tokens, keys)
    stats.valid += len(fresh)
    stats.unique += int(np.count_nonzero(leader))
    stats.cache_hits += int(np.count_nonzero(hit))
    stats.in_run_duplicates += int(np.count_nonzero(~leader & ~hit))
    stats.to_send += len(at)
