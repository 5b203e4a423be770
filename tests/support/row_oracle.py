"""The per-row result assembly as it was before finalize went columnar (issue 20): the
oracle tests/output/test_row_assembly.py compares output.results against, row for row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pyarrow as pa

from batchd.config.pricing import PriceBook, Usage
from batchd.intake.ingest import CACHE_EXACT, CACHE_IN_RUN, CACHE_NONE, CACHED
from batchd.outcome import FAILED, INVALID, SUCCEEDED, Outcome
from batchd.output.results import COSTS_SCHEMA, MISSING_RESULT, RESULTS_SCHEMA

_SUM_FIELDS = (
    "cache_saved_input_tokens",
    "cache_saved_output_tokens",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_usd",
    "baseline_cost_usd",
    "gpu_seconds",
)
_outcome_dec = msgspec.msgpack.Decoder(Outcome)


class CostSummary:
    """Sums over result rows, grouped by backend and model: costs.parquet equals the row sums."""

    def __init__(self, run_id: str, price_book_version: str) -> None:
        self._run_id = run_id
        self._version = price_book_version
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, row: dict[str, Any]) -> None:
        model = row["model_used"] or row["model_requested"] or ""
        g = self._groups.get((row["backend"], model))
        if g is None:
            g = self._groups[(row["backend"], model)] = {
                "requests": 0,
                "succeeded": 0,
                "not_succeeded": 0,
                "cache_hits": 0,
                "in_run_hits": 0,
                **dict.fromkeys(_SUM_FIELDS, 0),
                "prompt_cache_savings_usd": 0.0,
            }
        g["requests"] += 1
        g["succeeded" if row["status"] == SUCCEEDED else "not_succeeded"] += 1
        if row["cache"] == CACHE_EXACT:
            g["cache_hits"] += 1
        elif row["cache"] == CACHE_IN_RUN:
            g["in_run_hits"] += 1
        for f in _SUM_FIELDS:
            g[f] += row[f]
        g["prompt_cache_savings_usd"] += row["prompt_cache_savings_usd"]

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
                    "price_book_version": self._version,
                }
            )
        return pa.Table.from_pylist(rows, schema=COSTS_SCHEMA)


class RowAssembler:
    """Lines-part batches in, result-row batches out (same order, same count)."""

    def __init__(
        self,
        run_id: str,
        prices: PriceBook,
        lookup: Callable[[list[bytes]], dict[bytes, Outcome]],
        summary: CostSummary,
        baseline_model: Callable[[str], str] | None = None,
    ) -> None:
        """`baseline_model(requested)`: the realtime model priced as the line's baseline
        (an alias's reference model); by default the requested model itself."""
        self._run_id = run_id
        self._baseline_model = baseline_model or (lambda m: m)
        self._prices = prices
        self._lookup = lookup
        self.summary = summary
        self.status_counts: dict[str, int] = {}
        # per tier: lines, cost_usd, and batch_price_usd (the same usage at the batch price)
        self.tiers: dict[str, dict[str, float]] = {}

    def assemble(self, lines: pa.RecordBatch) -> pa.RecordBatch:
        cols = lines.to_pydict()
        keys = [
            k
            for k, s in zip(cols["request_key"], cols["state"], strict=True)
            if k is not None and s != CACHED
        ]
        outcomes = self._lookup(keys) if keys else {}
        out: dict[str, list[Any]] = {name: [] for name in RESULTS_SCHEMA.names}
        for i in range(lines.num_rows):
            row = self._row(cols, i, outcomes)
            self.summary.add(row)
            self.status_counts[row["status"]] = self.status_counts.get(row["status"], 0) + 1
            if row["tier"] is not None:
                self._count_tier(row)
            for name, values in out.items():
                values.append(row[name])
        return pa.RecordBatch.from_pydict(out, schema=RESULTS_SCHEMA)

    def _row(
        self, cols: dict[str, list[Any]], i: int, outcomes: dict[bytes, Outcome]
    ) -> dict[str, Any]:
        key = cols["request_key"][i]
        state = cols["state"][i]
        cache = cols["cache"][i]
        model_requested = cols["model_requested"][i]
        row: dict[str, Any] = {
            "run_id": self._run_id,
            "line_no": cols["line_no"][i],
            "custom_id": cols["custom_id"][i],
            "request_key": key.hex() if key else None,
            "tenant": cols["tenant"][i] or None,
            "tags": cols["tags"][i],
            "model_requested": model_requested,
            "cache": cache,
        }
        if state == INVALID:
            o = Outcome(
                status=INVALID,
                error_type=cols["error_type"][i],
                error_message=cols["error_message"][i],
            )
        elif state == CACHED:
            o = _outcome_dec.decode(cols["cached_outcome"][i])
            o.backend, o.cost_usd, o.gpu_seconds = "cache", 0.0, 0.0
        else:
            o = outcomes.get(key) or MISSING_RESULT
            if cache == CACHE_IN_RUN:
                o = msgspec.structs.replace(o, cost_usd=0.0, gpu_seconds=0.0)
        baseline = self._baseline(model_requested, o)
        saved = (o.input_tokens, o.output_tokens) if cache != CACHE_NONE else (0, 0)
        if cache != CACHE_NONE:  # nothing billed: the tokens it saved go to costs.parquet
            o = msgspec.structs.replace(
                o, input_tokens=0, cached_input_tokens=0, cache_write_tokens=0, output_tokens=0
            )
        row.update(
            model_requested=model_requested or None,
            model_used=o.model_used or None,
            backend=o.backend or None,
            tier=None if state in (INVALID, CACHED) else served_tier(o),
            status=o.status,
            output_text=o.output_text,
            response_json=o.response_json,
            finish_reason=o.finish_reason,
            error_type=o.error_type,
            error_message=o.error_message,
            input_tokens=o.input_tokens,
            cached_input_tokens=o.cached_input_tokens,
            cache_write_tokens=o.cache_write_tokens,
            output_tokens=o.output_tokens,
            cost_usd=o.cost_usd,
            gpu_seconds=o.gpu_seconds,
            submitted_at=_ts(o.submitted_at),
            completed_at=_ts(o.completed_at),
            baseline_cost_usd=baseline,
            prompt_cache_savings_usd=self._prompt_cache_saving(cache, o),
            cache_saved_input_tokens=saved[0],
            cache_saved_output_tokens=saved[1],
        )
        return row

    def _count_tier(self, row: dict[str, Any]) -> None:
        t = self.tiers.setdefault(row["tier"], {"lines": 0, "cost_usd": 0.0, "batch_price_usd": 0})
        t["lines"] += 1
        t["cost_usd"] += row["cost_usd"]
        at_batch = row["cost_usd"]
        price = self._prices.lookup(row["model_used"] or "")
        if row["tier"] == "realtime" and price is not None:
            usage = Usage(
                row["input_tokens"],
                row["cached_input_tokens"],
                row["cache_write_tokens"],
                row["output_tokens"],
            )
            at_batch = self._prices.cost_usd(price, usage, batch=True) if row["cost_usd"] else 0.0
        t["batch_price_usd"] += at_batch

    def _prompt_cache_saving(self, cache: str, o: Outcome) -> float:
        """What the vendor's prompt cache saved on this row (negative: writes never reused)."""
        if cache != CACHE_NONE or not (o.cached_input_tokens or o.cache_write_tokens):
            return 0.0
        price = self._prices.lookup(o.model_used)
        if price is None:
            return 0.0
        plain = Usage(o.input_tokens, 0, 0, o.output_tokens)
        return self._prices.cost_usd(price, plain, batch=True) - o.cost_usd

    def _baseline(self, model: str | None, o: Outcome) -> float:
        price = self._prices.lookup(self._baseline_model(model)) if model else None
        if price is None or (o.input_tokens == 0 and o.output_tokens == 0):
            return 0.0
        return self._prices.baseline_usd(price, Usage(o.input_tokens, 0, 0, o.output_tokens))


def served_tier(o: Outcome) -> str | None:
    """How a line was served: its outcome's tier; vLLM work is `gpu`; None when not served."""
    if o.tier is not None:
        return o.tier
    if o.backend == "vllm" and o.status in (SUCCEEDED, FAILED):
        return "gpu"
    return None


def _ts(epoch_s: float | None) -> int | None:
    return None if epoch_s is None else int(epoch_s * 1_000_000)
