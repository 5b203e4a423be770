"""Result rows (DESIGN §3): Parquet schema, row assembly, cost summary, OpenAI-format export.

Finalize joins the lines parts (one row per input line, in input order) with the
outcomes of the unique requests, by request key, in batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec
import pyarrow as pa

from batchd.config.pricing import PriceBook, Usage
from batchd.intake.ingest import CACHE_EXACT, CACHE_IN_RUN, CACHE_NONE, CACHE_SEMANTIC, CACHED
from batchd.outcome import FAILED, INVALID, SUCCEEDED, Outcome
from batchd.output.openai_export import export_line
from batchd.output.resolution import escalated_attempts, is_resolved, per_resolved

_TS = pa.timestamp("us", tz="UTC")

RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("line_no", pa.int64()),
        ("custom_id", pa.string()),
        ("request_key", pa.string()),
        ("tenant", pa.string()),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("model_requested", pa.string()),
        ("model_used", pa.string()),
        ("backend", pa.string()),
        ("tier", pa.string()),  # batch | flex | realtime | gpu; NULL: not served by this run
        ("status", pa.string()),
        ("cache", pa.string()),
        ("output_text", pa.string()),
        ("response_json", pa.string()),
        ("finish_reason", pa.string()),
        ("tool_calls", pa.string()),  # JSON text in OpenAI's shape; NULL: no tool call
        ("embedding", pa.list_(pa.float32())),  # NULL: not an embeddings request of one input
        # a line of several inputs / prompts: all vectors / each prompt's text, in input order
        ("embeddings", pa.list_(pa.list_(pa.float32()))),  # NULL: not several inputs
        ("output_texts", pa.list_(pa.string())),  # NULL: not several prompts
        ("schema_valid", pa.bool_()),  # NULL: the line gave no JSON schema
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("request_id", pa.string()),  # the vendor's id for this request; NULL: none given
        # cascades: JSON text, every target tried in order (planning/escalation.py); NULL: one
        ("escalations", pa.string()),
        ("input_tokens", pa.int64()),
        ("cached_input_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),  # the part of output_tokens spent thinking
        ("cost_usd", pa.float64()),
        ("baseline_cost_usd", pa.float64()),
        ("gpu_seconds", pa.float64()),
        ("submitted_at", _TS),
        ("completed_at", _TS),
        # semantic cache: the entry that answered (cache = semantic) or was checked against the
        # model's answer (a verification sample), how alike (cosine), and that check's verdict
        ("cache_source_key", pa.string()),
        ("similarity", pa.float64()),
        ("semantic_verified", pa.string()),  # agreed | disagreed | unverified; NULL: no sample
    ]
)

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
_json = msgspec.json.Encoder()

MISSING_RESULT = Outcome(
    status=FAILED,
    error_type="no_result",
    error_message="batchd recorded no result for this request (internal error); resubmit the file",
)


class CostSummary:
    """Sums over result rows, grouped by backend and model: costs.parquet equals the row sums,
    plus what the run bought that is no row (`add_purchase`: the semantic cache's batched
    embeddings, run.embed_step)."""

    def __init__(self, run_id: str, price_book_version: str) -> None:
        self._run_id = run_id
        self._version = price_book_version
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    def _group(self, backend: str | None, model: str) -> dict[str, Any]:
        g = self._groups.get((backend, model))  # type: ignore[arg-type]
        if g is None:
            g = self._groups[(backend, model)] = {  # type: ignore[index]
                "requests": 0,
                "succeeded": 0,
                "not_succeeded": 0,
                "cache_hits": 0,
                "in_run_hits": 0,
                "resolved": 0,
                "escalated": 0,
                **dict.fromkeys(_SUM_FIELDS, 0),
                "prompt_cache_savings_usd": 0.0,
            }
        return g

    def add(self, row: dict[str, Any]) -> None:
        g = self._group(row["backend"], row["model_used"] or row["model_requested"] or "")
        for backend, model, cost_usd in escalated_attempts(row):  # their cost is that target's
            e = self._group(backend, model)
            e["escalated"] += 1
            e["cost_usd"] += cost_usd
            g["cost_usd"] -= cost_usd
        g["requests"] += 1
        g["resolved"] += is_resolved(row)
        g["succeeded" if row["status"] == SUCCEEDED else "not_succeeded"] += 1
        if row["cache"] in (CACHE_EXACT, CACHE_SEMANTIC):
            g["cache_hits"] += 1
        elif row["cache"] == CACHE_IN_RUN:
            g["in_run_hits"] += 1
        for f in _SUM_FIELDS:
            g[f] += row[f]
        g["prompt_cache_savings_usd"] += row["prompt_cache_savings_usd"]

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


class RowAssembler:
    """Lines-part batches in, result-row batches out (same order, same count)."""

    def __init__(
        self,
        run_id: str,
        prices: PriceBook,
        lookup: Callable[[list[bytes]], dict[bytes, Outcome]],
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
        if self._verdicts is not None and "sem_check" in cols:
            out["semantic_verified"] = self._verdicts(
                cols["sem_check"],
                cols["sem_source_key"],
                cols["similarity"],
                cols["sem_scope"],
                out["status"],
                out["output_text"],
            )
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
            **_semantic_columns(cols, i),
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
                o,
                input_tokens=0,
                cached_input_tokens=0,
                cache_write_tokens=0,
                output_tokens=0,
                reasoning_tokens=0,
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
            tool_calls=o.tool_calls,
            embedding=o.embedding,
            embeddings=o.embeddings,
            output_texts=o.output_texts,
            schema_valid=o.schema_valid,
            error_type=o.error_type,
            error_message=o.error_message,
            request_id=o.request_id,
            # a cascade's attempts are the leader's: a follower or cache hit paid none
            escalations=o.escalations if cache == CACHE_NONE and state != INVALID else None,
            input_tokens=o.input_tokens,
            cached_input_tokens=o.cached_input_tokens,
            cache_write_tokens=o.cache_write_tokens,
            output_tokens=o.output_tokens,
            reasoning_tokens=o.reasoning_tokens,
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


def _semantic_columns(cols: dict[str, list[Any]], i: int) -> dict[str, Any]:
    """cache_source_key and similarity of a semantic hit or verification sample, else NULL."""
    check = cols["sem_check"][i] if "sem_check" in cols else None
    if check not in ("hit", "verify"):
        return {"cache_source_key": None, "similarity": None, "semantic_verified": None}
    return {
        "cache_source_key": cols["sem_source_key"][i].hex(),
        "similarity": cols["similarity"][i],
        "semantic_verified": None,
    }


def served_tier(o: Outcome) -> str | None:
    """How a line was served: its outcome's tier; vLLM work is `gpu`; None when not served."""
    if o.tier is not None:
        return o.tier
    if o.backend == "vllm" and o.status in (SUCCEEDED, FAILED):
        return "gpu"
    return None


def _ts(epoch_s: float | None) -> int | None:
    return None if epoch_s is None else int(epoch_s * 1_000_000)


def write_openai_jsonl(
    batch: pa.RecordBatch, out: BinaryIO, lines: pa.RecordBatch | None = None
) -> None:
    """The OpenAI batch output format, one line per row, for existing consumers
    (output.openai_export). `lines`: the rows' lines part (each line's endpoint)."""
    rows = batch.to_pylist()
    endpoints = lines.column("endpoint").to_pylist() if lines is not None else [None] * len(rows)
    encodings = (
        lines.column("encoding_format").to_pylist() if lines is not None else [None] * len(rows)
    )
    for row, endpoint, encoding in zip(rows, endpoints, encodings, strict=True):
        out.write(_json.encode(export_line(row, endpoint, encoding)) + b"\n")
