"""How a plan is shown: `batchd plan` (table or --json) and planned against actual in `report`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Console
from rich.table import Table

from batchd.cli.rounding import money

if TYPE_CHECKING:
    from batchd.run.pipeline import PlanReport


def plan_document(file: str, report: PlanReport) -> dict[str, Any]:
    """The plan as one JSON-able document (`batchd plan --json`)."""
    targets = {}
    for name, est in sorted(report.estimates.items()):
        doc = msgspec.to_builtins(est)
        doc["chunks"] = sum(f"{c.backend}:{c.model}" == name for c in report.chunks)
        targets[name] = doc
    cost = sum(e.cost_usd for e in report.estimates.values())
    base = sum(e.baseline_usd for e in report.estimates.values())
    s = report.summary
    return {
        "file": file,
        "deadline": _iso(report.deadline_at),
        "stats": msgspec.to_builtins(report.stats),
        "targets": targets,
        "gpu": {
            "capacity_s": s.gpu_capacity_s,
            "used_s": s.gpu_used_s,
            "committed_s": s.gpu_committed_s,
            "tokens_per_gpu_s": s.tokens_per_gpu_s,
            "reserved": s.gpu_reserved,
        },
        "unmeetable": s.unmeetable,
        "totals": {
            "requests": sum(e.requests for e in report.estimates.values()),
            "cost_usd": cost,
            "cost_max_usd": sum(e.cost_max_usd for e in report.estimates.values()),
            "baseline_usd": base,
            "savings_usd": base - cost,
            "marginal_cost_usd": s.marginal_usd,
            "all_vendor_usd": s.all_vendor_usd,
            "unmeetable": sum(s.unmeetable.values()),
            "guard_worst_usd": sum(e.guard_worst_usd for e in report.estimates.values()),
            "sync_requests": sum(e.sync_requests for e in report.estimates.values()),
        },
    }


def print_plan(
    out: Console,
    file: str,
    report: PlanReport,
    elapsed_s: float,
    deadline_source: str = "",
    wide: bool = False,
) -> None:
    st = report.stats
    out.print(f"[bold]{file}[/]: {st.lines:,} lines read in {elapsed_s:.1f}s")
    out.print(f"  valid {st.valid:,}  invalid {st.invalid:,}  blank {st.blank:,}")
    out.print(
        f"  unique requests {st.unique:,}  in-run duplicates {st.in_run_duplicates:,}  "
        f"cache hits {st.cache_hits:,}  to send {st.to_send:,}"
    )
    for kind, n in sorted(st.invalid_by_type.items()):
        out.print(f"  invalid: {kind} {n:,}")
    for line_no, custom_id, kind, message in st.invalid_examples:
        out.print(f"    line {line_no} ({custom_id}): {kind}: {message}", markup=False)
    if st.invalid > len(st.invalid_examples):
        out.print(
            f"    ... {st.invalid - len(st.invalid_examples):,} more; every invalid line is a row "
            "of `batchd submit`'s results (status invalid, with its reason)"
        )
    doc = plan_document(file, report)
    title = f"plan (nothing sent), deadline {doc['deadline']}"
    out.print(
        f"  deadline {doc['deadline']}" + (f" ({deadline_source})" if deadline_source else "")
    )
    (_wide_plan if wide else _narrow_plan)(out, doc, title)
    tot = doc["totals"]
    out.print(
        f"  at most ${tot['cost_max_usd']:,.4f} if every reply uses its max_tokens; "
        f"all on the cheapest vendor batch ${tot['all_vendor_usd']:,.4f}"
    )
    if tot["sync_requests"]:
        out.print(
            f"  {tot['sync_requests']:,} requests are due before a batch would finish: planned "
            "straight to flex (batch price) or realtime (list price)"
        )
    out.print(
        f"  worst case if the deadline guard fires (every vendor line sent synchronously): "
        f"${tot['guard_worst_usd']:,.4f}"
    )
    gpu = doc["gpu"]
    if gpu["reserved"]:
        out.print(
            f"  beyond the reserved GPUs (paid anyway) the run costs "
            f"${tot['marginal_cost_usd']:,.4f}"
        )
    if gpu["capacity_s"]:
        pct = 100 * gpu["used_s"] / gpu["capacity_s"]
        out.print(
            f"  GPU capacity used {gpu['used_s']:,.0f} of {gpu['capacity_s']:,.0f} GPU-s "
            f"({pct:.0f}%) at {gpu['tokens_per_gpu_s']:,.0f} tokens per GPU-s"
            + (", reserved GPUs (sunk cost)" if gpu["reserved"] else "")
            + (
                f"; {gpu['committed_s']:,.0f} GPU-s already queued by other runs taken off"
                if gpu["committed_s"]
                else ""
            )
        )
    for model, n in sorted(doc["unmeetable"].items()):
        out.print(
            f"  [yellow]{n:,} {model} requests cannot finish before their deadline[/] "
            "(submitted anyway they end failed: deadline_unmeetable)"
        )
    embed = int(st.semantic_embedding.get("texts_to_embed", 0))
    if embed:
        out.print(
            f"  semantic cache: {embed:,} texts to embed first as a batch "
            "(cache.semantic.embedding), not in the estimate above"
        )


def _narrow_plan(out: Console, doc: dict[str, Any], title: str) -> None:
    """Fits 80 columns; the rows' amounts add up to the total row."""
    targets = doc["targets"]
    keys = ("cost_usd", "baseline_usd", "savings_usd")
    shown = {k: money([t[k] for t in targets.values()]) for k in keys}
    table = Table(title=title)
    for col in ("target", "requests", "est. cost $", "list $", "savings $"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for i, (name, t) in enumerate(targets.items()):
        requests = f"{t['requests']:,}" + (
            f" ({t['sync_requests']:,} sync)" if t["sync_requests"] else ""
        )
        table.add_row(name, requests, *(shown[k][0][i] for k in keys))
    table.add_section()
    total = doc["totals"]["requests"]
    table.add_row("total", f"{total:,}", *(shown[k][1] for k in keys))
    out.print(table)
    out.print("  (--wide: tokens, chunks, worst case and GPU-seconds per target; --json: all)")


def _wide_plan(out: Console, doc: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    cols = ("target", "requests", "chunks", "est. input tok", "est. output tok", "est. cost")
    extra = ("max cost", "if the guard fires", "realtime list", "savings", "GPU-s")
    for col in (*cols, *extra):
        table.add_column(col, justify="left" if col == "target" else "right")
    targets = doc["targets"]
    keys = ("cost_usd", "cost_max_usd", "guard_worst_usd", "baseline_usd", "savings_usd")
    shown = {k: money([t[k] for t in targets.values()]) for k in keys}
    for i, (name, t) in enumerate(targets.items()):
        table.add_row(
            name,
            f"{t['requests']:,}"
            + (f" ({t['sync_requests']:,} flex/realtime)" if t["sync_requests"] else ""),
            str(t["chunks"]),
            f"{t['input_tokens']:,}",
            f"{t['output_tokens']:,}",
            *(f"${shown[k][0][i]}" for k in keys),
            f"{t['gpu_seconds']:,.0f}" if t["gpu_seconds"] else "-",
        )
    out.print(table)
    out.print(
        f"  estimated cost ${shown['cost_usd'][1]}; realtime list price "
        f"${shown['baseline_usd'][1]}, saving ${shown['savings_usd'][1]}"
    )


def print_planned_vs_actual(
    out: Console, stats: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """`batchd report`: the plan recorded at submit against what the run's rows cost."""
    planned: dict[str, Any] = stats.get("estimates") or {}
    if not planned:
        return
    lines = []
    for name, est in sorted(planned.items()):
        backend, _, model = name.partition(":")
        mine = [
            r
            for r in rows
            if r["backend"] == backend
            and (r["model"] == model or r["model"].startswith(model + "-"))
        ]
        sent = sum(r["requests"] - r["cache_hits"] - r["in_run_hits"] for r in mine)
        lines.append(
            [
                name,
                f"{est['requests']:,}",
                f"{sent:,}",
                f"{est['cost_usd']:.4f}",
                f"{sum(r['cost_usd'] for r in mine):.4f}",
                f"{est.get('gpu_seconds', 0.0):,.0f}",
                f"{sum(r['gpu_seconds'] for r in mine):,.0f}",
            ]
        )
    gpu = any(line[5] != "0" or line[6] != "0" for line in lines)
    head = ["target", "planned", "sent", "planned $", "actual $", "plan GPU-s", "GPU-s"]
    t = Table(*head[: 7 if gpu else 5], title="planned against actual")
    for line in lines:
        t.add_row(*line[: 7 if gpu else 5])
    out.print(t)
    failed = (stats.get("plan") or {}).get("unmeetable") or {}
    for model, n in sorted(failed.items()):
        out.print(f"  {n:,} {model} requests were planned as unmeetable (failed rows)")


def _same_model(used: str, planned: str) -> bool:
    """The vendor may answer with a dated snapshot of the planned model."""
    return used == planned or used.startswith(planned + "-")


def _iso(epoch_s: float) -> str:
    when = datetime.fromtimestamp(epoch_s, tz=UTC).replace(microsecond=0)
    return when.isoformat().replace("+00:00", "Z")


SYNC_TIERS = ("flex", "realtime")


def print_tiers(out: Console, stats: dict[str, Any]) -> None:
    """`batchd report`: how lines were served, and what the deadline guard's fallback cost."""
    tiers: dict[str, dict[str, float]] = stats.get("tiers") or {}
    lines = sum(t["lines"] for t in tiers.values())
    if not lines:
        return
    out.print(
        "served by tier: "
        + ", ".join(f"{name} {int(t['lines'])}" for name, t in sorted(tiers.items()))
    )
    sync = [tiers[name] for name in SYNC_TIERS if name in tiers]
    if not sync:
        return
    n = sum(t["lines"] for t in sync)
    cost = sum(t["cost_usd"] for t in sync)
    at_batch = sum(t["batch_price_usd"] for t in sync)
    total = sum(t["cost_usd"] for t in tiers.values())
    out.print(
        f"deadline fallback (flex/realtime): {int(n)} of {int(lines)} served lines "
        f"({100 * n / lines:.0f}%), ${cost:,.4f} of ${total:,.4f} "
        f"({100 * cost / total if total else 0:.0f}%); at the batch price ${at_batch:,.4f}: "
        f"the deadline cost you ${cost - at_batch:,.4f}"
    )
