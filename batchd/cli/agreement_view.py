"""The quality guard in `batchd report` and `batchd plan`: agreement with the reference per
alias and target, its 95% interval, the gate, and what the guard cost."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _interval(lo: float | None, hi: float | None) -> str:
    return "-" if lo is None or hi is None else f"{lo:.2f}-{hi:.2f}"


def _gate(gated: bool, was: bool) -> str:
    if gated:
        return "gated" if was else "closes"
    return "reopens" if was else "open"


def print_quality(out: Console, rows: list[dict[str, Any]]) -> None:
    """Fits 80 columns: one alias target per row (this run's samples, the running figure)."""
    if not rows:
        return
    t = Table(
        "alias / target",
        "n",
        "agree",
        "95% (run)",
        "95% (all)",
        "gate",
        "guard $",
        title="quality guard: agreement with the reference",
    )
    for r in rows:
        agreement = r["agreement"]
        t.add_row(
            f"{r['alias']} / {r['target']}",
            f"{r['samples']:,}",
            "-" if agreement is None else f"{agreement:.2f}",
            _interval(r["ci_low"], r["ci_high"]),
            _interval(r["total_ci_low"], r["total_ci_high"]),
            _gate(r["gated"], r["gated_in_run"]),
            f"{r['guard_cost_usd']:.4f}",
        )
    out.print(t)
    for r in rows:
        ref, mina = r["reference"], r["min_agreement"]
        if r["gated_in_run"]:
            out.print(
                f"{r['alias']}: {r['target']} was gated in this run: its lines went to the "
                f"other targets or {ref}; it answered {r['probes']} probe line(s) only"
            )
        if r["gated"]:
            out.print(
                f"{r['alias']}: {r['target']} is gated for later runs: its 95% interval "
                f"{_interval(r['total_ci_low'], r['total_ci_high'])} lies below min_agreement "
                f"{mina:g}; it gets probe lines only until the interval is back over it"
            )
        if r["unscored"]:
            out.print(
                f"{r['alias']} / {r['target']}: {r['unscored']} pair(s) unscored "
                "(a side failed, or its answer could not be judged by the metric)"
            )
        if r.get("unparsable_verdicts"):  # runs before the judge metric have no such column
            out.print(
                f"{r['alias']} / {r['target']}: {r['unparsable_verdicts']} judge verdict(s) "
                'unparsable (not exactly YES / NO or {"verdict": "yes" | "no"}), counted apart'
            )


def print_guard_plan(out: Console, aliases: list[dict[str, Any]]) -> None:
    """`plan`: each guarded alias's targets, their measured agreement and gate state."""
    if not aliases:
        return
    t = Table(
        "alias / target",
        "metric",
        "samples",
        "agree",
        "95%",
        "gate",
        "guard lines",
        title="quality guard",
    )
    for a in aliases:
        for g in a["targets"]:
            agreement = g["agreement"]
            t.add_row(
                f"{a['alias']} / {g['target']}",
                a["metric"],
                f"{g['samples']:,}",
                "-" if agreement is None else f"{agreement:.2f}",
                _interval(g["ci_low"], g["ci_high"]) if g["samples"] else "-",
                "reference" if g["reference"] else ("gated" if g["gated"] else "open"),
                f"{g['guard_lines']:,}",
            )
    out.print(t)
    for a in aliases:
        for g in a["targets"]:
            if g["gated"]:
                out.print(
                    f"{a['alias']}: {g['target']} is gated (agreement below "
                    f"{a['min_agreement']:g}): its lines go to the next targets or the "
                    "reference; it gets probe lines only"
                )


def _usd(x: float | None) -> str:
    """Dollars per 1,000 requests: per-request amounts are fractions of a cent."""
    return "-" if x is None else f"${x * 1000:,.4f}"


def print_resolved(out: Console, rows: list[dict[str, Any]], guard_usd: float) -> None:
    """Cost per resolved request (succeeded, schema valid, not a refusal), per target and
    for the run, next to the realtime list price's; the run's with the guard's cost too."""
    resolved = sum(r.get("resolved", 0) for r in rows)
    cost = sum(r["cost_usd"] for r in rows)
    base = sum(r["baseline_cost_usd"] for r in rows)
    if len(rows) > 1:
        t = Table("backend / model", "resolved", "$ per 1k resolved", "list $ per 1k")
        for r in rows:
            t.add_row(
                f"{r['backend'] or '-'} / {r['model'] or '-'}",
                f"{r.get('resolved', 0):,} of {r['requests']:,}",
                _usd(r.get("cost_per_resolved_usd")),
                _usd(r.get("baseline_per_resolved_usd")),
            )
        out.print(t)
    if not resolved:
        out.print("cost per resolved request: - (no request resolved)")
        return
    out.print(
        f"cost per 1,000 resolved requests: {_usd(cost / resolved)} (list price "
        f"{_usd(base / resolved)}); {resolved:,} of {sum(r['requests'] for r in rows):,} resolved"
    )
    if guard_usd:
        out.print(f"  with the quality guard's cost: {_usd((cost + guard_usd) / resolved)}")
