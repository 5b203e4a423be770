"""What the semantic cache did in a run, from its results.parquet: hits, the verified
false-hit rate with its Wilson interval, and the list price those hits saved; and, from the
run's stats, what its embedder bought (an endpoint embedding target: texts, tokens, dollars).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from batchd.cache.semantic.answer_check import AGREED, DISAGREED, UNVERIFIED
from batchd.cache.semantic.guard import wilson
from batchd.intake.ingest import CACHE_SEMANTIC

COLUMNS = ["cache", "semantic_verified", "baseline_cost_usd"]


class SemanticSummary(msgspec.Struct):
    hits: int
    saved_usd: float  # realtime list price of the lines answered by semantic hits
    verified: int  # verification samples: hits also sent to the model and compared
    false_hits: int
    false_hit_rate: float | None
    interval_95: tuple[float, float] | None  # Wilson
    unverified: int = 0  # samples whose answers could not be compared (no embedding)


def semantic_summary(table: pa.Table) -> SemanticSummary | None:
    """None when the table has no semantic columns or nothing semantic happened."""
    if not set(COLUMNS) <= set(table.column_names):
        return None
    hits_mask = pc.equal(table["cache"], CACHE_SEMANTIC)
    hits = int(pc.sum(hits_mask).as_py() or 0)
    saved = pc.sum(pc.filter(table["baseline_cost_usd"], hits_mask)).as_py() or 0.0
    verdicts = table["semantic_verified"]
    agreed = int(pc.sum(pc.equal(verdicts, AGREED)).as_py() or 0)
    wrong = int(pc.sum(pc.equal(verdicts, DISAGREED)).as_py() or 0)
    unverified = int(pc.sum(pc.equal(verdicts, UNVERIFIED)).as_py() or 0)
    n = agreed + wrong
    if hits == 0 and n == 0 and unverified == 0:
        return None
    return SemanticSummary(
        hits,
        float(saved),
        n,
        wrong,
        wrong / n if n else None,
        wilson(wrong, n) if n else None,
        unverified,
    )


def describe(s: SemanticSummary) -> str:
    text = f"semantic cache: {s.hits:,} rows answered by a similar request (${s.saved_usd:,.4f}"
    text += " at list price, not billed)"
    if s.verified and s.interval_95 is not None and s.false_hit_rate is not None:
        lo, hi = s.interval_95
        text += (
            f"; {s.verified:,} verified by the model, {s.false_hits:,} false: "
            f"{100 * s.false_hit_rate:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"
        )
    else:
        text += "; none verified in this run"
    if s.unverified:
        text += f"; {s.unverified:,} samples left unverified (an answer had no embedding)"
    return text


def as_dict(s: SemanticSummary | None) -> dict[str, Any] | None:
    return None if s is None else msgspec.to_builtins(s)


SPEND_FIELDS = ("embedded_texts", "embedding_calls", "embedding_tokens", "embedding_cost_usd")


def embedding_spend(stats: dict[str, Any]) -> dict[str, float] | None:
    """What the semantic cache's embedder bought synchronously in a run (runs of versions
    before the embedding steps: finalize's answer comparisons, ingest lookups); None when
    it bought nothing (a run now buys its embeddings as batches, `batch_embedding`)."""
    parts = [(stats.get("ingest") or {}).get("semantic_embedding") or {}]
    parts.append(stats.get("semantic") or {})
    total = {f: sum(p.get(f, 0) for p in parts) for f in SPEND_FIELDS}
    return total if total["embedded_texts"] or total["embedding_calls"] else None


def batch_embedding(stats: dict[str, Any]) -> dict[str, float] | None:
    """The run's embedding steps (run.embed_step, run.answer_embed_step): texts embedded as
    Batch API jobs, their tokens and cost (a row of costs.parquet); None when it had none."""
    got = stats.get("embedding") or {}
    return got if "embedding_cost_usd" in got else None


def describe_spend(spend: dict[str, float]) -> str:
    return (
        f"semantic cache embeddings: {int(spend['embedded_texts']):,} texts in "
        f"{int(spend['embedding_calls']):,} requests, {int(spend['embedding_tokens']):,} tokens, "
        f"${spend['embedding_cost_usd']:,.6f} (synchronous calls at list price; billed "
        "beside the cost table, not in it)"
    )


def describe_batch(got: dict[str, float]) -> str:
    failed_answers = int(got.get("failed_answer_texts", 0))
    failed = int(got.get("failed_texts", 0)) - failed_answers
    answers = int(got.get("answer_texts", 0))
    return (
        f"semantic cache embeddings: {int(got['embedded_texts']):,} texts embedded as a batch, "
        f"{int(got['embedding_tokens']):,} tokens, ${got['embedding_cost_usd']:,.6f} at the "
        "batch price (in the cost table)"
        + (f"; {answers:,} of the texts were answers compared at finalize" if answers else "")
        + (f"; {failed:,} failed (their lines were not matched)" if failed else "")
        + (
            f"; {failed_answers:,} answers failed (their comparisons were left unverified)"
            if failed_answers
            else ""
        )
    )
