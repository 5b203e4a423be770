"""Many requests of one-vendor-target models into a dry run's chunks at once.

`add_many` is what `Chunker.add` does for each request in turn, in bulk: a plan's block of
plain chat lines (intake.column_settle) hands over its unique requests, each with its model,
line size and max_tokens, no deadline of its own, no line kept. Every model's requests are
appended to its target set by the slice, and cut into chunks by each chunk's free lines and
bytes (prefix sums), the chunks started and closed in the order the per-request path would
start them, so chunk ids, counts and prices come out the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from batchd.planning.routing import Route
from batchd.requests import CHAT, KEY_BYTES

Ints = npt.NDArray[np.int64]


def open_key(backend: str, model: str, tier: str, endpoint: str, escalate: bool) -> tuple[str, ...]:
    """Which open chunk a line goes to (`Chunker._write`; a release target is added on)."""
    return (backend, model, tier, endpoint, "e" if escalate else "")


def fill(
    sizes: Ints, max_lines: int, max_bytes: int, open_at: tuple[int, int] | None
) -> list[tuple[int, int]]:
    """Requests [lo, hi) per chunk, in order, as `Chunker._write` fills them one by one: the
    first run goes to the open chunk (its lines and bytes so far in `open_at`) when it has
    room (lo == hi: none); every other run starts a chunk, which always takes its first."""
    n = len(sizes)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=cum[1:])
    runs = []
    i = 0
    if open_at is not None:
        lines, n_bytes = open_at
        fits = int(np.searchsorted(cum, max_bytes - n_bytes, side="right")) - 1
        i = max(0, min(max_lines - lines, fits, n))
        runs.append((0, i))
    while i < n:
        end = int(np.searchsorted(cum, cum[i] + max_bytes, side="right")) - 1
        hi = min(n, i + max_lines, max(end, i + 1))
        runs.append((i, hi))
        i = hi
    return runs


def add_many(
    chunker: Any,
    routes: list[tuple[str, str]],
    model_nos: npt.NDArray[np.uint32],
    sizes: Ints,
    max_tokens: Ints,
    keys: bytes,
) -> None:
    """`Chunker.add_many`: `chunker.add(backend, model, b"", max_tokens[i], None, key_i, None,
    -1, CHAT, sizes[i])` for each request i in order, its (backend, model) routes[model_nos[i]]
    and its key the i-th 16 bytes of `keys`. (The Chunker's own state: this is its bulk path,
    in a module of its own for size.)"""
    c = chunker
    firsts = np.unique(model_nos, return_index=True)
    starts: list[tuple[int, tuple[str, ...], Route, tuple[int, int, int]]] = []
    for m in [int(x) for x in firsts[0][np.argsort(firsts[1])]]:  # the order models came
        at = np.flatnonzero(model_nos == m)
        backend, model = routes[m]
        found = c._sets.get(model)
        _, ts = found if found is not None else c._target_set(backend, model)
        if not ts.direct:  # not a one-vendor-target model: one by one
            for i in at.tolist():
                chunker.add(backend, model, b"", int(max_tokens[i]), None,
                            keys[i * KEY_BYTES : (i + 1) * KEY_BYTES], None, -1, CHAT,
                            int(sizes[i]))  # fmt: skip
            continue
        deadline = c._deadline
        tier = c._direct_tier(model, ts, deadline)
        _append(c, ts, sizes[at], max_tokens[at], deadline, None if tier else (at, keys))
        if tier is None:
            continue  # all end failed at finish
        target_model = ts.targets[0][1]
        key = open_key(backend, target_model, tier, CHAT, False)
        cur = c._open.get(key)
        max_lines, max_bytes = c._limit_of.get(backend) or c._limits(backend)
        open_at = (cur.chunk.n_requests, cur.chunk.n_bytes) if cur is not None else None
        runs = fill(sizes[at], max_lines, max_bytes, open_at)
        estimate = c._settings.estimate_output_tokens
        mt = max_tokens[at]
        est = np.where(mt != 0, mt, estimate).astype(np.int64)
        cum_bytes = np.concatenate(([0], np.cumsum(sizes[at])))
        cum_est = np.concatenate(([0], np.cumsum(est)))
        for j, (lo, hi) in enumerate(runs):
            sums = (hi - lo, int(cum_bytes[hi] - cum_bytes[lo]), int(cum_est[hi] - cum_est[lo]))
            if j == 0 and open_at is not None:
                _count(cur.chunk, sums)
            else:  # a chunk started at its first request's place in the block
                starts.append((int(at[lo]), key, Route(backend, target_model), sums))
    for _, started, route, run in sorted(starts, key=lambda s: s[0]):
        if started in c._open:
            c._close(started)
        cur = c._start(route)
        cur.chunk.tier = started[2]
        cur.chunk.endpoint = CHAT
        c._open[started] = cur
        _count(cur.chunk, run)


def _count(chunk: Any, sums: tuple[int, int, int]) -> None:
    chunk.n_requests += sums[0]
    chunk.n_bytes += sums[1]
    chunk.est_max_tokens += sums[2]


def _append(c: Any, ts: Any, sizes: Ints, max_tokens: Ints, deadline: float, failed: Any) -> None:
    """The requests into their target set, a full slice priced and dropped as it fills
    (`Chunker.add`); `failed`: their places and the block's keys, when none can be done."""
    n, i = len(sizes), 0
    while i < n:
        room = c.planner.price_slice - len(ts.max_tokens) if ts.early else n - i
        hi = min(n, i + max(room, 1))
        ts.line_bytes.frombytes(sizes[i:hi].astype(np.int64).tobytes())  # array("q")
        ts.max_tokens.frombytes(max_tokens[i:hi].astype(np.int64).tobytes())
        ts.deadline_at.frombytes(np.full(hi - i, deadline, dtype=np.float64).tobytes())
        if failed is not None:
            at, keys = failed
            first = ts.base + len(ts.max_tokens) - (hi - i)
            for k, place in enumerate(at[i:hi].tolist()):
                ts.failed_keys[first + k] = keys[place * KEY_BYTES : (place + 1) * KEY_BYTES]
        i = hi
        if ts.early and len(ts.max_tokens) >= c.planner.price_slice:
            c.planner.fold_part(ts, c._totals.fold)
