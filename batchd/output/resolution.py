"""Whether a result row resolved its request (issue 18 "cost per resolved request"): it
succeeded and passed the alias's checks: its answer is schema valid (where the line gave a
schema), it is not a refusal, and it was not escalated onward to another target."""

from __future__ import annotations

from typing import Any

from batchd.outcome import SUCCEEDED
from batchd.planning.escalation import REFUSAL_FINISHES, decode_entries

REFUSALS = REFUSAL_FINISHES  # every backend maps its refusal finish to this


def is_resolved(row: dict[str, Any]) -> bool:
    """Resolved by the row's final target (an answer kept although it met the alias's
    escalate_on, for want of time, did not pass the alias's checks)."""
    return (
        row["status"] == SUCCEEDED
        and row.get("schema_valid") is not False
        and row.get("finish_reason") not in REFUSALS
        and not (row.get("escalations") and decode_entries(row["escalations"])[-1].met)
    )


def escalated_attempts(row: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(backend, model, cost_usd) of each target that sent the row's line on: not resolved
    there, and its cost is that target's."""
    if not row.get("escalations"):
        return []
    out = []
    for e in decode_entries(row["escalations"]):
        if e.escalated:
            backend, _, model = e.target.partition(":")
            out.append((backend, model, e.cost_usd))
    return out


def per_resolved(total_usd: float, resolved: int) -> float | None:
    """Cost per resolved request; None when nothing resolved."""
    return total_usd / resolved if resolved else None
