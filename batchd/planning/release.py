"""Where the deadline guard sends an alias's GPU lines the GPUs have not run by its guard time.

A request of an alias placed on vLLM keeps, beside its vLLM line, its line for one vendor
target of the alias (the chunk's `release_path`, same order): the deadline guard
(`run.deadline_guard`) sends those lines there when the GPU work has not started in time.
That target is, per request, the first of the alias's vendor targets that can take it, in
this order: targets the guard can send synchronously (flex / realtime; `Planner.sync_tier`)
before the others, each group cheapest first by what the guard's synchronous send would
cost for the alias's requests. A request no vendor target can take (a plain vLLM model) has
no release line: it stays on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from batchd.planning.estimates import VLLM, Planner, Priced, TargetSet


def release_order(ts: TargetSet, priced: Priced, planner: Planner) -> list[int]:
    """The alias's vendor target columns, the guard's preferred first."""

    def rank(j: int) -> tuple[bool, float]:
        backend, model = ts.targets[j]
        worst = priced.guard_worst_usd[:, j]
        finite = worst[np.isfinite(worst)]
        mean_usd = float(finite.mean()) if len(finite) else float("inf")
        return planner.sync_tier(backend, model) is None, mean_usd

    vendor = [j for j, (backend, _) in enumerate(ts.targets) if backend != VLLM]
    return sorted(vendor, key=rank)


def release_target(order: list[int], lens: Sequence[int]) -> int | None:
    """The column a request's release line comes from (None: no vendor target takes it)."""
    return next((j for j in order if lens[j] > 0), None)
