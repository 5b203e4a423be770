"""`batchd report`: cost and savings of a finished run, by backend and model."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from batchd.cli.agreement_view import print_quality, print_resolved
from batchd.cli.common import cli_settings, get_run, out
from batchd.cli.plan_view import print_planned_vs_actual, print_tiers
from batchd.cli.rounding import money
from batchd.cli.runs import run_output
from batchd.output.semantic_summary import (
    COLUMNS,
    as_dict,
    batch_embedding,
    describe,
    describe_batch,
    describe_spend,
    embedding_spend,
    semantic_summary,
)
from batchd.run.services import open_services

_MONEY = ("cost_usd", "baseline_cost_usd", "savings_usd")


def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column (tokens, prompt cache); needs ~150 cols.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """Cost and savings of a finished run, by backend and model.

    Cost is what the run was billed; list is the realtime list price of the requested
    models with no cache and no batch discount; saved = list - cost. Shown amounts are
    rounded so that the rows add up to the total.
    """
    import pyarrow.parquet as pq

    svc = open_services(cli_settings())
    try:
        run = get_run(svc, run_id)
    finally:
        svc.close()
    with run_output(run_id, "costs.parquet") as (_, path):
        rows = pq.read_table(path).to_pylist()
    with run_output(run_id, "results.parquet") as (_, path):
        have = set(pq.read_schema(path).names)
        semantic = semantic_summary(
            pq.read_table(path, columns=COLUMNS if set(COLUMNS) <= have else ["cache"])
        )
    spend = embedding_spend(run.stats or {})
    batched = batch_embedding(run.stats or {})
    if as_json:
        doc = {
            "run_id": run.run_id,
            "outcome": run.outcome,
            "rows": rows,
            "totals": _totals(rows),
            "planned": (run.stats or {}).get("plan"),
            "quality": (run.stats or {}).get("quality", []),  # the quality guard (quality.parquet)
            "semantic_cache": as_dict(semantic),
            "semantic_cache_embedding": spend,  # what its embedding endpoint cost (sync)
            "semantic_cache_embedding_batch": batched,  # its embedding step (a costs row)
        }
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return
    (_wide_table if wide else _narrow_table)(rows)
    cost = sum(r["cost_usd"] for r in rows)
    base = sum(r["baseline_cost_usd"] for r in rows)
    pct = 100 * (base - cost) / base if base else 0.0
    version = rows[0]["price_book_version"] if rows else "-"
    out.print(f"saved {pct:.0f}% against the realtime list price (price book {version})")
    saved_in = sum(r["cache_saved_input_tokens"] for r in rows)
    saved_out = sum(r["cache_saved_output_tokens"] for r in rows)
    if saved_in or saved_out:
        hits = sum(r["cache_hits"] + r["in_run_hits"] for r in rows)
        out.print(
            f"result cache: {hits:,} rows answered without a request, "
            f"{saved_in:,} input and {saved_out:,} output tokens not billed"
        )
    if semantic is not None:
        out.print(describe(semantic))
    if batched is not None:
        out.print(describe_batch(batched))
    if spend is not None:
        out.print(describe_spend(spend))
    prompt = sum(r["prompt_cache_savings_usd"] for r in rows)
    if any(r["cached_input_tokens"] or r["cache_write_tokens"] for r in rows):
        out.print(
            f"prompt cache: saved ${prompt:,.4f} of that (cache reads at 0.1x input, "
            "net of the cache-write premium)"
        )
    print_planned_vs_actual(out, run.stats or {}, rows)
    print_tiers(out, run.stats or {})
    quality = (run.stats or {}).get("quality", [])
    print_resolved(out, rows, sum(q["guard_cost_usd"] for q in quality))
    print_quality(out, quality)


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {
        k: sum(r.get(k, 0) for r in rows) for k in (*_MONEY, "requests", "succeeded", "resolved")
    }
    n = totals["resolved"]
    totals["cost_per_resolved_usd"] = totals["cost_usd"] / n if n else None
    totals["baseline_per_resolved_usd"] = totals["baseline_cost_usd"] / n if n else None
    return totals


def _columns(rows: list[dict[str, Any]]) -> dict[str, tuple[list[str], str]]:
    return {k: money([r[k] for r in rows]) for k in _MONEY}


def _narrow_table(rows: list[dict[str, Any]]) -> None:
    """Fits 80 columns: one target per row, its counts and money."""
    shown = _columns(rows)
    t = Table("backend / model", "rows", "ok", "cached", "cost $", "list $", "saved $")
    for i, r in enumerate(rows):
        t.add_row(
            f"{r['backend'] or '-'} / {r['model'] or '-'}",
            f"{r['requests']:,}",
            f"{r['succeeded']:,}",
            f"{r['cache_hits'] + r['in_run_hits']:,}",
            *(shown[k][0][i] for k in _MONEY),
        )
    t.add_section()
    t.add_row(
        "total",
        f"{sum(r['requests'] for r in rows):,}",
        f"{sum(r['succeeded'] for r in rows):,}",
        f"{sum(r['cache_hits'] + r['in_run_hits'] for r in rows):,}",
        *(shown[k][1] for k in _MONEY),
    )
    out.print(t)


def _wide_table(rows: list[dict[str, Any]]) -> None:
    shown = _columns(rows)
    t = Table(
        "backend",
        "model",
        "rows",
        "ok",
        "cache hits",
        "in-run",
        "in tok",
        "prompt-cached",
        "out tok",
        "cost $",
        "list $",
        "saved $",
        "of it by prompt cache $",
    )
    prompt, _ = money([r["prompt_cache_savings_usd"] for r in rows])
    for i, r in enumerate(rows):
        t.add_row(
            r["backend"] or "-",
            r["model"] or "-",
            str(r["requests"]),
            str(r["succeeded"]),
            str(r["cache_hits"]),
            str(r["in_run_hits"]),
            f"{r['input_tokens']:,}",
            f"{r['cached_input_tokens']:,} read / {r['cache_write_tokens']:,} written",
            f"{r['output_tokens']:,}",
            *(shown[k][0][i] for k in _MONEY),
            prompt[i],
        )
    out.print(t)
    out.print(
        f"total ${shown['cost_usd'][1]} against ${shown['baseline_cost_usd'][1]} at realtime "
        f"list price: saved ${shown['savings_usd'][1]}"
    )
