"""Sets of 16-byte digests for in-run dedup of huge files: SeenSet, or HashSeen in C.

Digests live in numpy as (hi, lo) uint64 pairs ordered by `hi` (16 bytes an
entry, no Python object per entry): sorted runs of at most `max_run` entries and a
small delta that is folded into the last run when it grows (a new run when the last
is full). A fold copies one run at most, so the peak is the set plus one run, not
twice the set. All work is vectorised per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

_keyset: Any
try:
    from batchd.intake import _keyset  # type: ignore[attr-defined,no-redef]
except ImportError:  # no compiler at install: SeenSet only
    _keyset = None

_U64 = npt.NDArray[np.uint64]


def contains_sorted(hi_sorted: _U64, lo_of: _U64, hi: _U64, lo: _U64) -> npt.NDArray[np.bool_]:
    """Which (hi, lo) pairs are in the set of pairs ordered by `hi` (`hi_sorted`, `lo_of`)."""
    n = len(hi_sorted)
    found = np.zeros(len(hi), dtype=bool)
    if n == 0:
        return found
    idx = np.searchsorted(hi_sorted, hi)
    while True:
        live = idx < n
        safe = np.where(live, idx, 0)
        same_hi = live & (hi_sorted[safe] == hi)
        found |= same_hi & (lo_of[safe] == lo)
        more = same_hi & ~found
        if not more.any():
            return found
        idx = np.where(more, idx + 1, n)


def _insert(hi_sorted: _U64, lo_of: _U64, hi: _U64, lo: _U64) -> tuple[_U64, _U64]:
    order = np.argsort(hi, kind="stable")
    return _insert_sorted(hi_sorted, lo_of, hi[order], lo[order])


def _insert_sorted(hi_sorted: _U64, lo_of: _U64, hi: _U64, lo: _U64) -> tuple[_U64, _U64]:
    """(hi, lo) pairs ordered by `hi` into the set's arrays."""
    pos = np.searchsorted(hi_sorted, hi)
    return np.insert(hi_sorted, pos, hi), np.insert(lo_of, pos, lo)


class Seen(Protocol):
    """What settling asks of a set of seen values (a SeenSet, or spill.Replay)."""

    def check_add(self, values: list[bytes]) -> list[bool]: ...

    def check_add_packed(self, packed: bytes) -> npt.NDArray[np.bool_]: ...


class SeenSet:
    def __init__(self, merge_every: int = 262_144, max_run: int = 4 << 20) -> None:
        empty = np.empty(0, dtype=np.uint64)
        self._runs: list[tuple[_U64, _U64]] = []
        self._delta = (empty, empty)
        self._merge_every = merge_every
        self._max_run = max(max_run, merge_every)

    def __len__(self) -> int:
        return sum(len(hi) for hi, _ in self._runs) + len(self._delta[0])

    def check_add(self, values: list[bytes]) -> list[bool]:
        """For each 16-byte value in order: seen before (earlier call or earlier in this list)?"""
        if not values:
            return []
        return self.check_add_packed(b"".join(values)).tolist()

    def check_add_packed(self, packed: bytes) -> npt.NDArray[np.bool_]:
        """`check_add` of the 16-byte values laid end to end in `packed`."""
        pairs = np.frombuffer(packed, dtype=np.uint64).reshape(-1, 2)
        if not len(pairs):
            return np.zeros(0, dtype=bool)
        # Looked up in sorted order (searchsorted walks the set forwards, cache-friendly);
        # after a stable sort equal pairs are adjacent, the first one in the list first.
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        hi, lo = pairs[order, 0], pairs[order, 1]
        seen = contains_sorted(*self._delta, hi, lo)
        for run in self._runs:
            seen |= contains_sorted(*run, hi, lo)
        seen[1:] |= (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])  # repeats inside the list
        new = ~seen
        if new.any():
            self._delta = _insert_sorted(*self._delta, hi[new], lo[new])
            if len(self._delta[0]) >= self._merge_every:
                self._fold()
        out = np.empty(len(pairs), dtype=bool)
        out[order] = seen
        return out

    def packed_windows(self, count: int) -> Iterator[bytes]:
        """Every value held, 16 bytes each, `count` values at a time (in no set order)."""
        for hi, lo in [*self._runs, self._delta]:
            for start in range(0, len(hi), count):
                pairs = np.empty((min(count, len(hi) - start), 2), dtype=np.uint64)
                pairs[:, 0], pairs[:, 1] = hi[start : start + count], lo[start : start + count]
                yield pairs.tobytes()

    def _fold(self) -> None:
        """The delta into the last run, or as a new run when the last one is full."""
        if self._runs and len(self._runs[-1][0]) + len(self._delta[0]) <= self._max_run:
            self._runs[-1] = _insert(*self._runs[-1], *self._delta)
        else:
            self._runs.append(self._delta)
        empty = np.empty(0, dtype=np.uint64)
        self._delta = (empty, empty)


class HashSeen:
    """SeenSet's answers from a C hash table (intake/_keyset.c): one probe a value, not a
    sort and searches a batch; up to twice SeenSet's memory (a table's free slots)."""

    def __init__(self) -> None:
        assert _keyset is not None
        self._set = _keyset.KeySet()

    def __len__(self) -> int:
        return len(self._set)

    def check_add(self, values: list[bytes]) -> list[bool]:
        if not values:
            return []
        return self.check_add_packed(b"".join(values)).tolist()

    def check_add_packed(self, packed: bytes) -> npt.NDArray[np.bool_]:
        return np.frombuffer(self._set.check_add_packed(packed), dtype=bool)

    def packed_windows(self, count: int) -> Iterator[bytes]:
        """Every value held, 16 bytes each, `count` values at a time (in the order added)."""
        for start in range(0, len(self._set), count):
            yield self._set.packed(start, count)


Held = SeenSet | HashSeen  # a set in memory: what a spill moves to disk at the switch


def new_seen() -> Held:
    """The fastest set this install has: the C hash table, else SeenSet."""
    return HashSeen() if _keyset is not None else SeenSet()
