"""RowAssembler's rows against a row-by-row reference (issue 20, finalize).

The reference below is the per-row assembly as it stood when issue 20's finalize work began
(one Outcome copy per row, a row dict per line): any faster assembly must equal it. The
corpus holds every kind of line: invalid, exact and semantic cache hits, in-run followers,
unique requests that succeeded (with and without the vendor's prompt cache, realtime /
batch / flex / gpu tiers, a cascade), failed, and ones with no outcome at all. Every column
of every row, the cost summary, status counts and tiers must be equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from batchd.config.pricing import PriceBook, Usage, load_price_book
from batchd.config.settings import load_settings
from batchd.intake.ingest import (
    CACHE_EXACT,
    CACHE_IN_RUN,
    CACHE_NONE,
    CACHE_SEMANTIC,
    CACHED,
    LINES_SCHEMA,
)
from batchd.outcome import CANCELED, EXPIRED, FAILED, INVALID, SUCCEEDED, Outcome
from batchd.output.resolution import escalated_attempts, is_resolved
from batchd.output.results import MISSING_RESULT, RESULTS_SCHEMA, CostSummary
from batchd.output.row_assembly import RowAssembler, mapping_finder
from batchd.planning.escalation import Entry, encode_entries

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Outcome)
MODELS = ("gpt-5.4-nano", "gpt-5.4-mini", "gpt-5-mini", "no-such-model")


# --- the reference: the per-row assembly, cost summary and tier counts, as they stood ---


def _semantic_columns(cols: dict[str, list[Any]], i: int) -> dict[str, Any]:
    check = cols["sem_check"][i] if "sem_check" in cols else None
    if check not in ("hit", "verify"):
        return {"cache_source_key": None, "similarity": None, "semantic_verified": None}
    return {
        "cache_source_key": cols["sem_source_key"][i].hex(),
        "similarity": cols["similarity"][i],
        "semantic_verified": None,
    }


def served_tier(o: Outcome) -> str | None:
    if o.tier is not None:
        return o.tier
    if o.backend == "vllm" and o.status in (SUCCEEDED, FAILED):
        return "gpu"
    return None


def _ts(epoch_s: float | None) -> int | None:
    return None if epoch_s is None else int(epoch_s * 1_000_000)


def _ref_baseline(prices: PriceBook, model: str | None, o: Outcome) -> float:
    price = prices.lookup(model) if model else None
    if price is None or (o.input_tokens == 0 and o.output_tokens == 0):
        return 0.0
    return prices.baseline_usd(price, Usage(o.input_tokens, 0, 0, o.output_tokens))


def _ref_prompt_cache_saving(prices: PriceBook, cache: str, o: Outcome) -> float:
    if cache != CACHE_NONE or not (o.cached_input_tokens or o.cache_write_tokens):
        return 0.0
    price = prices.lookup(o.model_used)
    if price is None:
        return 0.0
    plain = Usage(o.input_tokens, 0, 0, o.output_tokens)
    return prices.cost_usd(price, plain, batch=True) - o.cost_usd


def _ref_summary_add(summary: CostSummary, row: dict[str, Any]) -> None:
    g = summary._group(row["backend"], row["model_used"] or row["model_requested"] or "")
    for backend, model, cost_usd in escalated_attempts(row):
        e = summary._group(backend, model)
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
    for f in (
        "cache_saved_input_tokens",
        "cache_saved_output_tokens",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "cost_usd",
        "baseline_cost_usd",
        "gpu_seconds",
    ):
        g[f] += row[f]
    g["prompt_cache_savings_usd"] += row["prompt_cache_savings_usd"]


def _ref_count_tier(prices: PriceBook, tiers: dict[str, Any], row: dict[str, Any]) -> None:
    t = tiers.setdefault(row["tier"], {"lines": 0, "cost_usd": 0.0, "batch_price_usd": 0})
    t["lines"] += 1
    t["cost_usd"] += row["cost_usd"]
    at_batch = row["cost_usd"]
    price = prices.lookup(row["model_used"] or "")
    if row["tier"] == "realtime" and price is not None:
        usage = Usage(
            row["input_tokens"],
            row["cached_input_tokens"],
            row["cache_write_tokens"],
            row["output_tokens"],
        )
        at_batch = prices.cost_usd(price, usage, batch=True) if row["cost_usd"] else 0.0
    t["batch_price_usd"] += at_batch


def _reference_rows(
    prices: PriceBook, lines: pa.RecordBatch, outcomes: dict[bytes, Outcome], run_id: str = "run-x"
):
    """The per-row assembly (results.py as it stood when issue 20's finalize work began)."""
    cols = lines.to_pydict()
    rows = []
    for i in range(lines.num_rows):
        key, state, cache = cols["request_key"][i], cols["state"][i], cols["cache"][i]
        model_requested = cols["model_requested"][i]
        row: dict[str, Any] = {
            "run_id": run_id,
            "line_no": cols["line_no"][i],
            "custom_id": cols["custom_id"][i],
            "request_key": key.hex() if key else None,
            "tenant": cols["tenant"][i] or None,
            "tags": cols["tags"][i],
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
            o = _dec.decode(cols["cached_outcome"][i])
            o.backend, o.cost_usd, o.gpu_seconds = "cache", 0.0, 0.0
        else:
            o = outcomes.get(key) or MISSING_RESULT
            if cache == CACHE_IN_RUN:
                o = msgspec.structs.replace(o, cost_usd=0.0, gpu_seconds=0.0)
        baseline = _ref_baseline(prices, model_requested, o)
        saved = (o.input_tokens, o.output_tokens) if cache != CACHE_NONE else (0, 0)
        if cache != CACHE_NONE:
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
            prompt_cache_savings_usd=_ref_prompt_cache_saving(prices, cache, o),
            cache_saved_input_tokens=saved[0],
            cache_saved_output_tokens=saved[1],
        )
        rows.append(row)
    return rows


def _outcome(u: int) -> Outcome:
    ok = u % 5 != 0
    cascade = u % 11 == 0
    status = SUCCEEDED if ok else (FAILED, EXPIRED, CANCELED)[(u // 15) % 3]
    return Outcome(
        status=status,
        model_used=MODELS[u % 3],
        backend="vllm" if u % 13 == 0 else "openai",
        output_text=f"answer {u}" if ok else None,
        output_texts=[f"a{u}", f"b{u}"] if u % 17 == 0 else None,
        embedding=[0.5, float(u)] if u % 19 == 0 else None,
        embeddings=[[1.0], [float(u)]] if u % 23 == 0 else None,
        response_json=f'{{"id": "chatcmpl-{u}"}}',
        finish_reason=("refusal" if u % 29 == 0 else "stop") if ok else None,
        error_type=None if ok else "server_error",
        error_message=None if ok else "the vendor failed this line",
        tool_calls='[{"id": "t"}]' if u % 31 == 0 else None,
        schema_valid=(u % 2 == 0) if u % 3 == 0 else None,
        request_id=f"req_{u}" if u % 4 else None,
        escalations=encode_entries(
            [
                Entry(target="openai:gpt-5.4-nano", cost_usd=0.001, escalated=True),
                Entry(
                    target="openai:gpt-5.4-mini",
                    cost_usd=0.002,
                    escalated=False,
                    met="refusal" if u % 2 else None,
                ),
            ]
        )
        if cascade
        else None,
        input_tokens=100 + u % 400,
        cached_input_tokens=(u % 7) * 16,
        cache_write_tokens=(u % 5) * 8,
        output_tokens=20 + u % 200,
        reasoning_tokens=u % 9,
        cost_usd=(100 + u % 400) * 2.5e-8,
        gpu_seconds=0.25 if u % 13 == 0 else 0.0,
        submitted_at=1.79e9 + u,
        completed_at=None if u % 37 == 0 else 1.79e9 + 3600 + u,
        tier=("realtime", "batch", "flex", None)[u % 4],
    )


def _corpus(n: int) -> tuple[pa.RecordBatch, dict[bytes, Outcome]]:
    outcomes = {}
    cols: dict[str, list[Any]] = {name: [] for name in LINES_SCHEMA.names}
    for i in range(n):
        kind = ("unique", "follower", "exact", "semantic", "invalid", "missing")[i % 6]
        u = i // 2
        key = u.to_bytes(16, "little")
        if kind == "unique":
            outcomes[key] = _outcome(u)
        state = {"invalid": INVALID, "exact": CACHED, "semantic": CACHED}.get(kind, "pending")
        cache = {
            "follower": CACHE_IN_RUN,
            "exact": CACHE_EXACT,
            "semantic": CACHE_SEMANTIC,
        }.get(kind, CACHE_NONE)
        if kind == "follower":
            key = ((i - 1) // 2).to_bytes(16, "little")  # the unique line just before
        row = {
            "line_no": i + 1,
            "custom_id": f"req-{i}",
            "request_key": None if kind == "invalid" else key,
            "tenant": "acme" if i % 4 else "",
            "tags": {"job": "nightly"} if i % 2 else {},
            "model_requested": None if kind == "invalid" and i % 4 == 0 else MODELS[i % 4],
            "state": state,
            "cache": cache,
            "error_type": "bad_max_tokens" if kind == "invalid" else None,
            "error_message": "max_tokens must be a positive integer" if kind == "invalid" else None,
            "cached_outcome": _enc.encode(_outcome(u)) if state == CACHED else None,
            "endpoint": None if kind == "invalid" else "chat",
            "sem_source_key": b"\x01" * 16 if kind == "semantic" else None,
            "similarity": 0.97 if kind == "semantic" else None,
            "sem_check": "hit" if kind == "semantic" else None,
        }
        for name in LINES_SCHEMA.names:
            cols[name].append(row.get(name))
    return pa.RecordBatch.from_pydict(cols, schema=LINES_SCHEMA), outcomes


def _assemble_both(prices: PriceBook, lines: pa.RecordBatch, outcomes: dict[bytes, Outcome]):
    def lookup(keys: list[bytes]) -> dict[bytes, Outcome]:
        return {k: outcomes[k] for k in keys if k in outcomes}

    fast = RowAssembler("run-x", prices, mapping_finder(lookup), CostSummary("run-x", "v"))
    step = 97  # several batches: the sums and counts carry over from one to the next
    batches = [fast.assemble(lines.slice(i, step)) for i in range(0, lines.num_rows, step)]
    got = pa.Table.from_batches(batches, schema=RESULTS_SCHEMA)

    summary, counts, tiers = CostSummary("run-x", "v"), {}, {}
    want = _reference_rows(prices, lines, outcomes)
    for row in want:
        _ref_summary_add(summary, row)
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if row["tier"] is not None:
            _ref_count_tier(prices, tiers, row)
    want_table = pa.Table.from_pylist(
        [{k: r[k] for k in RESULTS_SCHEMA.names} for r in want], schema=RESULTS_SCHEMA
    )
    return fast, got, (summary, counts, tiers), want_table, want


def test_rows_equal_the_row_by_row_reference(tmp_path: Path) -> None:
    prices = load_price_book(load_settings(environ={"BATCHD_HOME": str(tmp_path)}))
    lines, outcomes = _corpus(1200)
    fast, got_table, (summary, counts, tiers), want_table, want = _assemble_both(
        prices, lines, outcomes
    )
    got = got_table.to_pylist()
    assert got == want_table.to_pylist()
    assert got_table.equals(want_table)
    assert fast.summary.table().equals(summary.table())
    assert list(fast.summary._groups) == list(summary._groups)  # the totals add in this order
    for field in ("cost_usd", "baseline_cost_usd", "prompt_cache_savings_usd"):
        assert fast.summary.total(field) == summary.total(field)
    assert list(fast.status_counts.items()) == list(counts.items())
    assert list(fast.tiers.items()) == list(tiers.items())
    # the corpus holds every kind the assembly tells apart
    statuses = {r["status"] for r in got}
    assert {SUCCEEDED, FAILED, INVALID, EXPIRED, CANCELED} <= statuses
    assert {r["cache"] for r in got} == {CACHE_NONE, CACHE_IN_RUN, CACHE_EXACT, CACHE_SEMANTIC}
    assert any(r["escalations"] for r in got) and any(r["prompt_cache_savings_usd"] for r in want)
    assert any(g["escalated"] for g in summary._groups.values())
    assert any(r["error_type"] == "no_result" for r in got)
    assert any(r["cache_source_key"] for r in got)
    assert any(r["embedding"] for r in got) and any(r["embeddings"] for r in got)
    assert any(r["output_texts"] for r in got)
    assert {r["tier"] for r in got} >= {"realtime", "batch", "flex", "gpu", None}
    assert any(r["baseline_cost_usd"] for r in got)
    assert any(g["cache_saved_input_tokens"] for g in summary._groups.values())
