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

from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings
from batchd.intake.ingest import (
    CACHE_EXACT,
    CACHE_IN_RUN,
    CACHE_NONE,
    CACHE_SEMANTIC,
    CACHED,
    LINES_SCHEMA,
)
from batchd.outcome import FAILED, INVALID, SUCCEEDED, Outcome
from batchd.output.results import (
    MISSING_RESULT,
    RESULTS_SCHEMA,
    CostSummary,
    RowAssembler,
    _semantic_columns,
    _ts,
    served_tier,
)
from batchd.planning.escalation import Entry, encode_entries

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Outcome)
MODELS = ("gpt-5.4-nano", "gpt-5.4-mini", "gpt-5-mini", "no-such-model")


def _reference_rows(asm: RowAssembler, lines: pa.RecordBatch, outcomes: dict[bytes, Outcome]):
    """The per-row assembly (results.py as it stood when issue 20's finalize work began)."""
    cols = lines.to_pydict()
    rows = []
    for i in range(lines.num_rows):
        key, state, cache = cols["request_key"][i], cols["state"][i], cols["cache"][i]
        model_requested = cols["model_requested"][i]
        row: dict[str, Any] = {
            "run_id": "run-x",
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
        baseline = asm._baseline(model_requested, o)
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
            prompt_cache_savings_usd=asm._prompt_cache_saving(cache, o),
            cache_saved_input_tokens=saved[0],
            cache_saved_output_tokens=saved[1],
        )
        rows.append(row)
    return rows


def _outcome(u: int) -> Outcome:
    ok = u % 5 != 0
    cascade = u % 11 == 0
    return Outcome(
        status=SUCCEEDED if ok else FAILED,
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
                Entry(target="openai:gpt-5.4-mini", cost_usd=0.002, escalated=False),
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


def test_rows_equal_the_row_by_row_reference(tmp_path: Path) -> None:
    prices = load_price_book(load_settings(environ={"BATCHD_HOME": str(tmp_path)}))
    lines, outcomes = _corpus(600)

    def lookup(keys: list[bytes]) -> dict[bytes, Outcome]:
        return {k: outcomes[k] for k in keys if k in outcomes}

    fast = RowAssembler("run-x", prices, lookup, CostSummary("run-x", "v"))
    got = pa.Table.from_batches([fast.assemble(lines)]).to_pylist()

    ref = RowAssembler("run-x", prices, lookup, CostSummary("run-x", "v"))
    want = _reference_rows(ref, lines, outcomes)
    for row in want:
        ref.summary.add(row)
        ref.status_counts[row["status"]] = ref.status_counts.get(row["status"], 0) + 1
        if row["tier"] is not None:
            ref._count_tier(row)
    want_table = pa.Table.from_pylist(
        [{k: r[k] for k in RESULTS_SCHEMA.names} for r in want], schema=RESULTS_SCHEMA
    )
    assert got == want_table.to_pylist()
    assert fast.summary.table().equals(ref.summary.table())
    assert fast.status_counts == ref.status_counts
    assert fast.tiers == ref.tiers
    # the corpus holds every kind the assembly tells apart
    statuses = {r["status"] for r in got}
    assert {SUCCEEDED, FAILED, INVALID} <= statuses
    assert {r["cache"] for r in got} == {CACHE_NONE, CACHE_IN_RUN, CACHE_EXACT, CACHE_SEMANTIC}
    assert any(r["escalations"] for r in got) and any(r["prompt_cache_savings_usd"] for r in want)
    assert any(r["error_type"] == "no_result" for r in got)
    assert any(r["cache_source_key"] for r in got)
    assert {r["tier"] for r in got} >= {"realtime", "batch", "flex", "gpu", None}
