"""Result rows from a lines-part batch, column-wise (issue 20): Arrow and numpy over the
whole batch, Python only for the rows that need it (invalid lines, cache hits, requests
with no outcome: their Outcome is made per row, then joined as columns like any other).

Each column is what the per-row assembly gave (tests/output/test_row_assembly.py holds that
reference and compares every column of every line kind): prices are worked out with the
same float operations in the same order, sums added in row order (output.cost_summary).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchd.config.pricing import PER_MTOK, Price, PriceBook
from batchd.intake.ingest import CACHE_IN_RUN, CACHE_NONE, CACHED
from batchd.outcome import FAILED, INVALID, SUCCEEDED, Outcome
from batchd.output.columnar_outcomes import hex_column
from batchd.output.cost_summary import CostSummary, added, is_
from batchd.output.results import MISSING_RESULT, RESULTS_SCHEMA
from batchd.storage.arrow_outcomes import outcome_batch

# keys (binary, no nulls) -> (outcomes table, each found key's row in it, which were found)
Finder = Callable[[pa.Array], tuple[pa.Table, np.ndarray, np.ndarray]]
_outcome_dec = msgspec.msgpack.Decoder(Outcome)
_NULL = pa.scalar(None, pa.string())
_TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
_PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "batch_discount",
    "cache_write_5m_multiplier",
    "cache_write_1h_multiplier",
)


def mapping_finder(lookup: Callable[[list[bytes]], dict[bytes, Outcome]]) -> Finder:
    """A Finder over a per-key lookup (outcomes held as structs)."""

    def find(keys: pa.Array) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        wanted = keys.to_pylist()
        got = lookup(wanted)
        found = np.array([k in got for k in wanted], dtype=bool)
        table = pa.Table.from_batches([outcome_batch([got[k] for k in wanted if k in got])])
        return table, np.arange(table.num_rows, dtype=np.int64), found

    return find


class RowAssembler:
    """Lines-part batches in, result-row batches out (same order, same count)."""

    def __init__(
        self,
        run_id: str,
        prices: PriceBook,
        find: Finder,
        summary: CostSummary,
        baseline_model: Callable[[str], str] | None = None,
        semantic_verdicts: Callable[..., list[str | None]] | None = None,
    ) -> None:
        """`baseline_model(requested)`: the realtime model priced as the line's baseline
        (an alias's reference model); by default the requested model itself.
        `semantic_verdicts`: cache.semantic.answer_check.Verifier.verdicts (the semantic
        cache's checks)."""
        self._verdicts = semantic_verdicts
        self._run_id = run_id
        self._baseline_model = baseline_model or (lambda m: m)
        self._prices = prices
        self._find = find
        self.summary = summary
        self.status_counts: dict[str, int] = {}
        # per tier: lines, cost_usd, and batch_price_usd (the same usage at the batch price)
        self.tiers: dict[str, dict[str, float]] = {}

    def assemble(self, lines: pa.RecordBatch) -> pa.RecordBatch:
        return self.finish(lines, self.outcomes(lines))

    def outcomes(self, lines: pa.RecordBatch) -> pa.RecordBatch:
        """Each line's Outcome as columns. The first half of `assemble`, which changes
        nothing here: it may run in another thread, for the next batch, while `finish` runs
        for this one (the Arrow work in it runs without the GIL)."""
        state = lines.column("state")
        return self._outcomes(lines, is_(state, INVALID), is_(state, CACHED))

    def finish(self, lines: pa.RecordBatch, o: pa.RecordBatch) -> pa.RecordBatch:
        """The result rows of `lines`, given their `outcomes`; the sums and counts are
        added in the order batches come here."""
        n = lines.num_rows
        line = lines.column
        state, cache = line("state"), line("cache")
        invalid, cached = is_(state, INVALID), is_(state, CACHED)
        out: dict[str, Any] = {
            "run_id": pa.array([self._run_id] * n, pa.string()),
            "line_no": line("line_no"),
            "custom_id": line("custom_id"),
            "request_key": hex_column(line("request_key")),
            "tenant": _none_if_empty(line("tenant")),
            "tags": line("tags"),
            "model_requested": _none_if_empty(line("model_requested")),
            "cache": cache,
            "model_used": _none_if_empty(o["model_used"]),
            "backend": _none_if_empty(o["backend"]),
        }
        for name in ("status", "output_text", "response_json", "finish_reason", "tool_calls"):
            out[name] = o[name]
        for name in ("output_texts", "schema_valid", "error_type", "error_message"):
            out[name] = o[name]
        out["request_id"] = o["request_id"]
        out["embedding"] = o["embedding"].cast(pa.list_(pa.float32()))
        out["embeddings"] = o["embeddings"].cast(pa.list_(pa.list_(pa.float32())))
        out["tier"] = pc.if_else(pa.array(invalid | cached), _NULL, _served_tier(o))
        not_none = ~is_(cache, CACHE_NONE)
        out["escalations"] = pc.if_else(pa.array(~not_none & ~invalid), o["escalations"], _NULL)
        tokens = {f: np.asarray(o[f], dtype=np.int64) for f in (*_TOKENS, "reasoning_tokens")}
        cost = np.array(o["cost_usd"], dtype=np.float64)
        gpu = np.array(o["gpu_seconds"], dtype=np.float64)
        follower = ~invalid & ~cached & is_(cache, CACHE_IN_RUN)
        cost[follower] = 0.0
        gpu[follower] = 0.0
        out["baseline_cost_usd"] = self._baseline(line("model_requested"), tokens)
        for saved, f in (
            ("cache_saved_input_tokens", "input_tokens"),
            ("cache_saved_output_tokens", "output_tokens"),
        ):
            out[saved] = np.where(not_none, tokens[f], 0)
        for f, values in tokens.items():  # a cache hit billed nothing
            out[f] = np.where(not_none, 0, values)
        out["cost_usd"], out["gpu_seconds"] = cost, gpu
        out["submitted_at"] = _ts(o["submitted_at"])
        out["completed_at"] = _ts(o["completed_at"])
        out.update(_semantic_columns(lines))
        if self._verdicts is not None and "sem_check" in lines.schema.names:
            out["semantic_verified"] = pa.array(
                self._verdicts(
                    line("sem_check").to_pylist(),
                    line("sem_source_key").to_pylist(),
                    line("similarity").to_pylist(),
                    line("sem_scope").to_pylist(),
                    out["status"].to_pylist(),
                    out["output_text"].to_pylist(),
                ),
                pa.string(),
            )
        saving = self._prompt_cache_saving(out, not_none)
        rows = pa.RecordBatch.from_arrays(
            [
                pa.array(out[f.name], f.type)
                if isinstance(out[f.name], np.ndarray)
                else out[f.name].cast(f.type)
                for f in RESULTS_SCHEMA
            ],
            schema=RESULTS_SCHEMA,
        )
        extra = {f: out[f] for f in ("cache_saved_input_tokens", "cache_saved_output_tokens")}
        self.summary.add_batch(rows, {**extra, "prompt_cache_savings_usd": saving})
        self._count(rows)
        return rows

    def _outcomes(
        self, lines: pa.RecordBatch, invalid: np.ndarray, cached: np.ndarray
    ) -> pa.RecordBatch:
        """Each line's Outcome as columns: looked up by key, or made per row where rare."""
        keys = lines.column("request_key")
        pending = ~invalid & ~cached
        wanted = pending & np.asarray(keys.is_valid())
        table, index, found = self._find(keys.filter(pa.array(wanted)))
        fast = np.zeros(len(keys), dtype=bool)
        fast[np.flatnonzero(wanted)[found]] = True
        slow_at = np.flatnonzero(~fast)
        slow: list[Outcome] = []
        if len(slow_at):
            rare = lines.take(pa.array(slow_at))
            error_types = rare.column("error_type").to_pylist()
            messages = rare.column("error_message").to_pylist()
            blobs = rare.column("cached_outcome").to_pylist()
            for j, i in enumerate(slow_at.tolist()):
                if invalid[i]:
                    slow.append(
                        Outcome(
                            status=INVALID, error_type=error_types[j], error_message=messages[j]
                        )
                    )
                elif cached[i]:
                    o = _outcome_dec.decode(blobs[j])
                    o.backend, o.cost_usd, o.gpu_seconds = "cache", 0.0, 0.0
                    slow.append(o)
                else:
                    slow.append(MISSING_RESULT)
        order = np.empty(len(keys), dtype=np.int64)  # each line's row of table + slow rows
        order[fast] = index
        order[slow_at] = table.num_rows + np.arange(len(slow_at))
        both = pa.concat_tables([table, pa.Table.from_batches([outcome_batch(slow)])])
        return both.take(pa.array(order)).combine_chunks().to_batches(max_chunksize=None)[0]

    def _price_columns(
        self, models: pa.Array, resolve: Callable[[Any], Price | None]
    ) -> dict[str, np.ndarray]:
        """Each row's price fields (NaN where no price) and `has` (a price was found)."""
        enc = pc.dictionary_encode(models, null_encoding="encode")
        prices = [resolve(m) for m in enc.dictionary.to_pylist()]
        at = np.asarray(enc.indices, dtype=np.int64)
        cols = {
            f: np.array([getattr(p, f) if p else np.nan for p in prices], dtype=np.float64)[at]
            for f in _PRICE_FIELDS
        }
        cols["has"] = np.array([p is not None for p in prices], dtype=bool)[at]
        return cols

    def _baseline(self, models: pa.Array, tokens: dict[str, np.ndarray]) -> np.ndarray:
        """PriceBook.baseline_usd of the requested model's baseline, before cache zeroing."""
        p = self._price_columns(
            models, lambda m: self._prices.lookup(self._baseline_model(m)) if m else None
        )
        tin, tout = tokens["input_tokens"], tokens["output_tokens"]
        with np.errstate(invalid="ignore"):
            value = (tin * p["input_per_mtok"] + tout * p["output_per_mtok"]) / PER_MTOK
        return np.where(p["has"] & ((tin != 0) | (tout != 0)), value, 0.0)

    def _prompt_cache_saving(self, out: dict[str, Any], not_none: np.ndarray) -> np.ndarray:
        """What the vendor's prompt cache saved on each row (negative: writes never reused)."""
        used = pc.fill_null(out["model_used"], "")
        p = self._price_columns(used, self._prices.lookup)
        zero = np.zeros(len(not_none), dtype=np.int64)
        plain = np.maximum(out["input_tokens"], 0)
        value = _cost_usd(p, plain, zero, zero, zero, out["output_tokens"]) - out["cost_usd"]
        use = ~not_none & ((out["cached_input_tokens"] != 0) | (out["cache_write_tokens"] != 0))
        return np.where(use & p["has"], value, 0.0)

    def _count(self, rows: pa.RecordBatch) -> None:
        """Status counts and per-tier lines, cost and cost at the batch price."""
        for item in pc.value_counts(rows.column("status")).to_pylist():
            s = item["values"]
            self.status_counts[s] = self.status_counts.get(s, 0) + item["counts"]
        tier = rows.column("tier")
        if tier.null_count == len(tier):
            return
        cost = np.asarray(rows.column("cost_usd"), dtype=np.float64)
        at_batch = cost.copy()
        realtime = is_(tier, "realtime")
        if realtime.any():
            p = self._price_columns(
                pc.fill_null(rows.column("model_used"), ""), self._prices.lookup
            )
            t = {f: np.asarray(rows.column(f), dtype=np.int64) for f in _TOKENS}
            plain = np.maximum(
                t["input_tokens"] - t["cached_input_tokens"] - t["cache_write_tokens"], 0
            )
            zero = np.zeros(len(cost), dtype=np.int64)
            billed = _cost_usd(
                p,
                plain,
                t["cached_input_tokens"],
                t["cache_write_tokens"],
                zero,
                t["output_tokens"],
            )
            use = realtime & p["has"]
            at_batch[use] = np.where(cost[use] != 0, billed[use], 0.0)
        names = pc.drop_null(tier).unique().to_pylist()  # in order of first appearance
        codes = np.asarray(pc.fill_null(pc.index_in(tier, pa.array(names)), -1))
        for k, name in enumerate(names):
            t_ = self.tiers.setdefault(name, {"lines": 0, "cost_usd": 0.0, "batch_price_usd": 0})
            mask = codes == k
            t_["lines"] += int(mask.sum())
            t_["cost_usd"] = added(t_["cost_usd"], cost[mask])
            t_["batch_price_usd"] = added(t_["batch_price_usd"], at_batch[mask])


def _cost_usd(
    p: dict[str, np.ndarray],
    plain: np.ndarray,
    cached: np.ndarray,
    write_5m: np.ndarray,
    write_1h: np.ndarray,
    output: np.ndarray,
) -> np.ndarray:
    """PriceBook.cost_usd(batch=True), row-wise, the same float operations in the same order."""
    ip = p["input_per_mtok"]
    with np.errstate(invalid="ignore"):
        total = (
            plain * ip
            + cached * p["cached_input_per_mtok"]
            + write_5m * ip * p["cache_write_5m_multiplier"]
            + write_1h * ip * p["cache_write_1h_multiplier"]
            + output * p["output_per_mtok"]
        ) / PER_MTOK
        return total * p["batch_discount"]


def _none_if_empty(arr: pa.Array) -> pa.Array:
    """`value or None` of a string column."""
    return pc.if_else(pc.equal(arr, ""), _NULL, arr)


def _served_tier(o: pa.RecordBatch) -> pa.Array:
    """The outcome's tier; vLLM work that ran is `gpu`; NULL when not served."""
    ran = pc.and_(
        pc.equal(o["backend"], "vllm"), pc.is_in(o["status"], pa.array([SUCCEEDED, FAILED]))
    )
    return pc.coalesce(o["tier"], pc.if_else(ran, pa.scalar("gpu"), _NULL))


def _ts(epoch_s: pa.Array) -> pa.Array:
    """Seconds to microseconds, truncated as int() does; NULL stays NULL."""
    micros = (np.asarray(pc.fill_null(epoch_s, 0.0), dtype=np.float64) * 1_000_000).astype(np.int64)
    return pa.array(micros, pa.int64(), mask=np.asarray(epoch_s.is_null())).cast(
        RESULTS_SCHEMA.field("submitted_at").type
    )


def _semantic_columns(lines: pa.RecordBatch) -> dict[str, pa.Array]:
    """cache_source_key and similarity of a semantic hit or verification sample, else NULL."""
    n = lines.num_rows
    empty = {
        "cache_source_key": pa.nulls(n, pa.string()),
        "similarity": pa.nulls(n, pa.float64()),
        "semantic_verified": pa.nulls(n, pa.string()),
    }
    if "sem_check" not in lines.schema.names:
        return empty
    shown = np.asarray(
        pc.fill_null(pc.is_in(lines.column("sem_check"), pa.array(["hit", "verify"])), False)
    )
    if not shown.any():
        return empty
    keys = lines.column("sem_source_key").to_pylist()
    empty["cache_source_key"] = pa.array(
        [k.hex() if s else None for k, s in zip(keys, shown.tolist(), strict=True)], pa.string()
    )
    empty["similarity"] = pc.if_else(
        pa.array(shown), lines.column("similarity"), pa.scalar(None, pa.float64())
    )
    return empty
