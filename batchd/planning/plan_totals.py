"""What a plan adds up to: per-target estimates and the planner's summary (shown by `plan`,
kept in the run's stats for `report`)."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

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


class SetSums(msgspec.Struct, kw_only=True):
    """One target set's decided requests added up (slice by slice when it is streamed)."""

    all_vendor_usd: float = 0.0
    unmeetable: int = 0
    estimates: dict[tuple[str, str], Estimate] = {}  # in target order


class Totals:
    """Sums of the streamed sets, filled by Planner.decide's `fold` as it prices them."""

    def __init__(self) -> None:
        self.by_set: dict[str, SetSums] = {}

    def fold(self, ts: TargetSet, choice: npt.NDArray[np.signedinteger[Any]], p: Priced) -> None:
        _add_set(self.by_set.setdefault(ts.name, SetSums()), ts.targets, choice, p)


def add_up(
    s: PlanSummary,
    estimates: dict[tuple[str, str], Estimate],
    planner: Planner,
    sets: list[TargetSet],
    priced: dict[str, Priced],
    totals: Totals | None = None,
) -> None:
    """Fill the plan's summary and per-target estimates from the priced, decided sets
    (a set not in `priced` is in `totals`)."""
    s.gpu_capacity_s = planner.capacity_s
    s.gpu_committed_s = planner.committed_gpu_s
    s.gpu_used_s = planner.gpu_used_s
    s.tokens_per_gpu_s = planner.tokens_per_gpu_s
    s.gpu_reserved = planner.settings.planner.gpu_reserved
    unmeetable: dict[str, int] = {}
    for ts in sets:
        p = priced.get(ts.name)
        if p is not None:
            sums = SetSums()
            _add_set(sums, ts.targets, ts.choice, p)
        else:
            sums = totals.by_set.get(ts.name, SetSums()) if totals is not None else SetSums()
        s.all_vendor_usd += sums.all_vendor_usd
        if sums.unmeetable:
            unmeetable[ts.name] = sums.unmeetable
        for target, part in sums.estimates.items():
            est = estimates.get(target)
            if est is None:
                est = estimates[target] = Estimate()
            for name in _SUMMED:
                setattr(est, name, getattr(est, name) + getattr(part, name))
    for (backend, _), est in estimates.items():
        est.savings_usd = est.baseline_usd - est.cost_usd
        if backend != VLLM or not s.gpu_reserved:
            s.marginal_usd += est.cost_usd
    s.unmeetable = unmeetable


_SUMMED = (
    "requests",
    "input_tokens",
    "output_tokens",
    "output_tokens_max",
    "cost_usd",
    "cost_max_usd",
    "sync_requests",
    "guard_worst_usd",
    "baseline_usd",
    "gpu_seconds",
)


def _add_set(
    sums: SetSums,
    targets: list[tuple[str, str]],
    choice: npt.NDArray[np.signedinteger[Any]],
    p: Priced,
) -> None:
    vendor_cols = [j for j, (b, _) in enumerate(targets) if b != VLLM]
    if vendor_cols:
        cheapest = p.cost_usd[:, vendor_cols].min(axis=1)
        sums.all_vendor_usd += float(cheapest[np.isfinite(cheapest)].sum())
    sums.unmeetable += int((choice == UNMEETABLE).sum())
    for j, target in enumerate(targets):
        mine = choice == j
        if not mine.any():
            continue
        est = sums.estimates.get(target)
        if est is None:
            est = sums.estimates[target] = Estimate()
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
