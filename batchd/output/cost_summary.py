"""costs.parquet: result rows summed per (backend, model), a batch of rows at a time.

The sums equal adding the rows one by one in line order, to the bit: integer columns are
plain sums; each float column is added in row order (numpy's cumsum is sequential, unlike
its pairwise sum), a cascade's attempts moved to their own target's group where they sit in
that order. Groups keep the order they were first touched in (the totals add them so).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchd.intake.ingest import CACHE_EXACT, CACHE_IN_RUN, CACHE_SEMANTIC
from batchd.outcome import SUCCEEDED
from batchd.output.resolution import REFUSALS, per_resolved
from batchd.planning.escalation import decode_entries

_INT_SUMS = (
    "cache_saved_input_tokens",
    "cache_saved_output_tokens",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
)
_FLOAT_SUMS = ("baseline_cost_usd", "gpu_seconds", "prompt_cache_savings_usd")
SUM_FIELDS = (*_INT_SUMS[:2], *_INT_SUMS[2:], "cost_usd", "baseline_cost_usd", "gpu_seconds")
COSTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("requests", pa.int64()),
        ("succeeded", pa.int64()),
        ("not_succeeded", pa.int64()),
        ("cache_hits", pa.int64()),
        ("in_run_hits", pa.int64()),
        ("input_tokens", pa.int64()),
        ("cached_input_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("baseline_cost_usd", pa.float64()),
        ("savings_usd", pa.float64()),
        # resolved: succeeded, schema valid, not a refusal (output/resolution.py)
        ("resolved", pa.int64()),
        ("escalated", pa.int64()),  # answers this target sent on to the next (never resolved)
        ("cost_per_resolved_usd", pa.float64()),  # NULL: nothing resolved
        ("baseline_per_resolved_usd", pa.float64()),
        ("prompt_cache_savings_usd", pa.float64()),
        ("cache_saved_input_tokens", pa.int64()),  # not billed: answered from the cache
        ("cache_saved_output_tokens", pa.int64()),
        ("gpu_seconds", pa.float64()),
        ("price_book_version", pa.string()),
    ]
)
_OWN_ADD = 1 << 30  # a row's own cost comes after its cascade's moves


def added(start: Any, values: np.ndarray) -> Any:
    """start + values[0] + values[1] + ..., in that order (start unchanged when empty)."""
    if len(values) == 0:
        return start
    return float(np.cumsum(np.concatenate(([start], values)))[-1])


def is_(arr: pa.Array, value: Any) -> np.ndarray:
    """arr == value as a numpy bool array (NULL: False)."""
    return np.asarray(pc.fill_null(pc.equal(arr, value), False), dtype=bool)


class CostSummary:
    """Sums over result rows, grouped by backend and model: costs.parquet equals the row sums,
    plus what the run bought that is no row (`add_purchase`: the semantic cache's batched
    embeddings, run.embed_step)."""

    def __init__(self, run_id: str, price_book_version: str) -> None:
        self._run_id = run_id
        self._version = price_book_version
        self._groups: dict[tuple[str | None, str], dict[str, Any]] = {}

    def _group(self, backend: str | None, model: str) -> dict[str, Any]:
        g = self._groups.get((backend, model))
        if g is None:
            g = self._groups[(backend, model)] = {
                "requests": 0,
                "succeeded": 0,
                "not_succeeded": 0,
                "cache_hits": 0,
                "in_run_hits": 0,
                "resolved": 0,
                "escalated": 0,
                **dict.fromkeys(SUM_FIELDS, 0),
                "prompt_cache_savings_usd": 0.0,
            }
        return g

    def add_batch(self, rows: pa.RecordBatch, extra: dict[str, np.ndarray]) -> None:
        """Add result rows (RESULTS_SCHEMA) and the sums that are no columns of theirs
        (prompt_cache_savings_usd, cache_saved_input_tokens, cache_saved_output_tokens)."""
        n = rows.num_rows
        if n == 0:
            return
        col = rows.column
        model = pc.coalesce(col("model_used"), col("model_requested"), pa.scalar(""))
        backends = pc.dictionary_encode(col("backend"), null_encoding="encode")
        models = pc.dictionary_encode(model)
        code = np.asarray(backends.indices, dtype=np.int64) * len(models.dictionary)
        code += np.asarray(models.indices, dtype=np.int64)
        _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        names = [
            (backends.dictionary[int(backends.indices[i].as_py())].as_py(), model[i].as_py())
            for i in first
        ]
        moves = self._cascade_moves(rows)  # (row, backend, model, cost_usd) per attempt sent on
        touches = sorted(
            [(int(first[g]), 0, names[g]) for g in range(len(names))]
            + [(pos, 1 + j, (b, m)) for j, (pos, b, m, _) in enumerate(moves)]
        )
        for _, _, name in touches:  # groups made in the order rows first touch them
            self._group(*name)
        groups = [self._group(*name) for name in names]
        status_ok = is_(col("status"), SUCCEEDED)
        cache = col("cache")
        hits = is_(cache, CACHE_EXACT) | is_(cache, CACHE_SEMANTIC)
        in_run = is_(cache, CACHE_IN_RUN)
        resolved = self._resolved(rows, status_ok)

        def column(f: str, dtype: type) -> np.ndarray:
            return np.asarray(extra[f] if f in extra else col(f), dtype=dtype)

        # each group's rows together, in row order (a stable sort): sums per group slice
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(len(groups) + 1))
        counts = {
            "requests": np.ones(n, dtype=np.int64),
            "resolved": resolved,
            "succeeded": status_ok,
            "cache_hits": hits,
            "in_run_hits": in_run,
            **{f: column(f, np.int64) for f in _INT_SUMS},
        }
        sums = {
            f: np.add.reduceat(np.asarray(v, dtype=np.int64)[order], starts[:-1]).tolist()
            for f, v in counts.items()
        }
        floats = {f: column(f, np.float64)[order] for f in _FLOAT_SUMS}
        for gi, g in enumerate(groups):
            for f, total in sums.items():
                g[f] += total[gi]
            g["not_succeeded"] += sums["requests"][gi] - sums["succeeded"][gi]
            lo, hi = int(starts[gi]), int(starts[gi + 1])
            for f, fvalues in floats.items():
                g[f] = added(g[f], fvalues[lo:hi])
        self._add_costs(np.asarray(col("cost_usd"), dtype=np.float64), inverse, names, moves)

    def _add_costs(
        self,
        cost: np.ndarray,
        inverse: np.ndarray,
        names: list[tuple[str | None, str]],
        moves: list[tuple[int, str, str, float]],
    ) -> None:
        """cost_usd per group in row order, a cascade's attempts moved to their targets."""
        if not moves:
            for gi, name in enumerate(names):
                g = self._group(*name)
                g["cost_usd"] = added(g["cost_usd"], cost[inverse == gi])
            return
        pos = list(range(len(cost)))
        sub = [_OWN_ADD] * len(cost)
        who: list[tuple[str | None, str]] = [names[g] for g in inverse.tolist()]
        values = cost.tolist()
        for j, (row, backend, model, c) in enumerate(moves):
            pos += [row, row]
            sub += [2 * j, 2 * j + 1]
            who += [(backend, model), who[row]]
            values += [c, -c]
            self._group(backend, model)["escalated"] += 1
        order = np.lexsort((np.array(sub), np.array(pos)))
        by_group: dict[tuple[str | None, str], list[float]] = {}
        for i in order.tolist():
            by_group.setdefault(who[i], []).append(values[i])
        for name, vals in by_group.items():
            g = self._group(*name)
            g["cost_usd"] = added(g["cost_usd"], np.array(vals, dtype=np.float64))

    @staticmethod
    def _cascade_moves(rows: pa.RecordBatch) -> list[tuple[int, str, str, float]]:
        """(row, backend, model, cost_usd) of every attempt a row's cascade sent on."""
        esc = rows.column("escalations")
        if esc.null_count == len(esc):
            return []
        out = []
        for i in np.flatnonzero(
            np.asarray(pc.fill_null(pc.greater(pc.utf8_length(esc), 0), False))
        ):
            for e in decode_entries(esc[int(i)].as_py()):
                if e.escalated:
                    backend, _, model = e.target.partition(":")
                    out.append((int(i), backend, model, e.cost_usd))
        return out

    @staticmethod
    def _resolved(rows: pa.RecordBatch, status_ok: np.ndarray) -> np.ndarray:
        """output.resolution.is_resolved of every row."""
        col = rows.column
        ok = status_ok & ~is_(col("schema_valid"), False)
        refusal = np.asarray(
            pc.fill_null(pc.is_in(col("finish_reason"), pa.array(sorted(REFUSALS))), False),
            dtype=bool,
        )
        ok &= ~refusal
        esc = col("escalations")
        if esc.null_count < len(esc):
            has = np.asarray(pc.fill_null(pc.greater(pc.utf8_length(esc), 0), False))
            for i in np.flatnonzero(has & ok):
                ok[i] = not decode_entries(esc[int(i)].as_py())[-1].met
        return ok

    def add_purchase(
        self,
        backend: str,
        model: str,
        *,
        requests: int,
        succeeded: int,
        input_tokens: int,
        cost_usd: float,
        baseline_cost_usd: float,
    ) -> None:
        """Requests the run bought for itself, not for a result row (none is resolved)."""
        g = self._group(backend, model)
        g["requests"] += requests
        g["succeeded"] += succeeded
        g["not_succeeded"] += requests - succeeded
        g["input_tokens"] += input_tokens
        g["cost_usd"] += cost_usd
        g["baseline_cost_usd"] += baseline_cost_usd

    def total(self, field: str) -> float:
        return float(sum(g[field] for g in self._groups.values()))

    def table(self) -> pa.Table:
        rows = []
        for (backend, model), g in sorted(
            self._groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])
        ):
            rows.append(
                {
                    "run_id": self._run_id,
                    "backend": backend,
                    "model": model,
                    **g,
                    "savings_usd": g["baseline_cost_usd"] - g["cost_usd"],
                    "cost_per_resolved_usd": per_resolved(g["cost_usd"], g["resolved"]),
                    "baseline_per_resolved_usd": per_resolved(
                        g["baseline_cost_usd"], g["resolved"]
                    ),
                    "price_book_version": self._version,
                }
            )
        return pa.Table.from_pylist(rows, schema=COSTS_SCHEMA)
