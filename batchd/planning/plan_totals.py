"""What a plan adds up to: per-target estimates and the planner's summary (shown by `plan`,
kept in the run's stats for `report`)."""

from __future__ import annotations

import msgspec


class Estimate(msgspec.Struct, kw_only=True):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_max: int = 0
    cost_usd: float = 0.0
    cost_max_usd: float = 0.0
    sync_requests: int = 0  # due before the batch turnaround: planned to flex / realtime
    guard_worst_usd: float = 0.0  # the cost if the deadline guard sends everything synchronously
    baseline_usd: float = 0.0
    savings_usd: float = 0.0  # baseline - cost
    gpu_seconds: float = 0.0


class PlanSummary(msgspec.Struct, kw_only=True):
    """What the planner decided, beyond the per-target estimates."""

    gpu_capacity_s: float = 0.0  # GPU-seconds usable before the latest deadline (ours)
    gpu_committed_s: float = 0.0  # GPU work of other unfinished runs, taken off the capacity
    gpu_used_s: float = 0.0
    tokens_per_gpu_s: float = 0.0
    gpu_reserved: bool = False
    all_vendor_usd: float = 0.0  # every request on its cheapest vendor target that is in time
    marginal_usd: float = 0.0  # the plan's cost beyond reserved GPUs (= cost when on demand)
    unmeetable: dict[str, int] = {}  # requested model -> requests no target finishes in time
