"""What a plan adds up to: per-target estimates and the planner's summary (shown by `plan`,
kept in the run's stats for `report`)."""

from __future__ import annotations

import msgspec
import numpy as np

from batchd.planning.estimates import UNMEETABLE, VLLM, Planner, Priced, TargetSet


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


def add_up(
    s: PlanSummary,
    estimates: dict[tuple[str, str], Estimate],
    planner: Planner,
    sets: list[TargetSet],
    priced: dict[str, Priced],
) -> None:
    """Fill the plan's summary and per-target estimates from the priced, decided sets."""
    s.gpu_capacity_s = planner.capacity_s
    s.gpu_committed_s = planner.committed_gpu_s
    s.gpu_used_s = planner.gpu_used_s
    s.tokens_per_gpu_s = planner.tokens_per_gpu_s
    s.gpu_reserved = planner.settings.planner.gpu_reserved
    unmeetable: dict[str, int] = {}
    for ts in sets:
        p = priced[ts.name]
        vendor_cols = [j for j, (b, _) in enumerate(ts.targets) if b != VLLM]
        if vendor_cols:
            cheapest = p.cost_usd[:, vendor_cols].min(axis=1)
            s.all_vendor_usd += float(cheapest[np.isfinite(cheapest)].sum())
        n_failed = int((ts.choice == UNMEETABLE).sum())
        if n_failed:
            unmeetable[ts.name] = n_failed
        for j, target in enumerate(ts.targets):
            mine = ts.choice == j
            if not mine.any():
                continue
            est = estimates.get(target)
            if est is None:
                est = estimates[target] = Estimate()
            est.requests += int(mine.sum())
            est.input_tokens += int(p.input_tokens[mine, j].sum())
            est.output_tokens += int(p.output_tokens[mine, j].sum())
            est.output_tokens_max += int(p.output_tokens_max[mine, j].sum())
            est.cost_usd += float(p.cost_usd[mine, j].sum())
            est.cost_max_usd += float(p.cost_max_usd[mine, j].sum())
            est.sync_requests += int(p.sync[mine, j].sum())
            worst = p.cost_usd if target[0] == VLLM else p.guard_worst_usd
            est.guard_worst_usd += float(worst[mine, j].sum())
            est.baseline_usd += float(p.baseline_usd[mine].sum())
            if target[0] == VLLM:
                est.gpu_seconds += float(p.gpu_s[mine].sum())
    for (backend, _), est in estimates.items():
        est.savings_usd = est.baseline_usd - est.cost_usd
        if backend != VLLM or not s.gpu_reserved:
            s.marginal_usd += est.cost_usd
    s.unmeetable = unmeetable
