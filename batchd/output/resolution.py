"""Whether a result row resolved its request (issue 18 "cost per resolved request"): it
succeeded and passed the alias's checks: its answer is schema valid (where the line gave a
schema), it is not a refusal, and it was not escalated onward to another target."""

from __future__ import annotations

from typing import Any

from batchd.outcome import SUCCEEDED

REFUSALS = frozenset({"content_filter"})  # every backend maps its refusal finish to this


def is_resolved(row: dict[str, Any]) -> bool:
    return (
        row["status"] == SUCCEEDED
        and row.get("schema_valid") is not False
        and row.get("finish_reason") not in REFUSALS
    )


def per_resolved(total_usd: float, resolved: int) -> float | None:
    """Cost per resolved request; None when nothing resolved."""
    return total_usd / resolved if resolved else None
