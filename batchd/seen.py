"""A compact set of 16-byte digests for in-run dedup of huge files.

Python sets cost ~90 bytes an entry; this keeps the digests as sorted pairs of
uint64 in numpy (16 bytes an entry) plus a small Python set of recent ones,
merged in when it grows. Lookups are batched so the per-line work stays a
single set operation.
"""

from __future__ import annotations

import numpy as np


class SeenSet:
    def __init__(self, merge_every: int = 262_144) -> None:
        self._hi = np.empty(0, dtype=np.uint64)
        self._lo = np.empty(0, dtype=np.uint64)
        self._recent: set[bytes] = set()
        self._merge_every = merge_every

    def __len__(self) -> int:
        return len(self._hi) + len(self._recent)

    def check_add(self, values: list[bytes]) -> list[bool]:
        """For each 16-byte value in order: seen before (earlier call or earlier in this list)?"""
        if not values:
            return []
        old = self._in_sorted(values)
        recent = self._recent
        out = []
        for value, in_old in zip(values, old, strict=True):
            if in_old or value in recent:
                out.append(True)
            else:
                recent.add(value)
                out.append(False)
        if len(recent) >= self._merge_every:
            self._merge()
        return out

    def _in_sorted(self, values: list[bytes]) -> list[bool]:
        n = len(self._hi)
        if n == 0:
            return [False] * len(values)
        pairs = np.frombuffer(b"".join(values), dtype=np.uint64).reshape(-1, 2)
        hi, lo = pairs[:, 0], pairs[:, 1]
        idx = np.searchsorted(self._hi, hi)
        found = np.zeros(len(values), dtype=bool)
        # Entries with an equal `hi` sit next to each other: walk them (almost always one step).
        while True:
            live = idx < n
            safe = np.where(live, idx, 0)
            same_hi = live & (self._hi[safe] == hi)
            found |= same_hi & (self._lo[safe] == lo)
            more = same_hi & ~found
            if not more.any():
                break
            idx = np.where(more, idx + 1, n)
        return found.tolist()  # type: ignore[no-any-return]

    def _merge(self) -> None:
        new = np.frombuffer(b"".join(self._recent), dtype=np.uint64).reshape(-1, 2)
        hi = np.concatenate([self._hi, new[:, 0]])
        lo = np.concatenate([self._lo, new[:, 1]])
        order = np.lexsort((lo, hi))
        self._hi, self._lo = hi[order], lo[order]
        self._recent = set()
