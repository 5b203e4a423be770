"""Where each request runs: fill GPU capacity with the biggest savings, the rest to a vendor.

Pure numpy over one entry per unique request (DESIGN §4 "Planner"):

- `vendor_cost_usd`: its cheapest vendor target that finishes before its deadline
  (`inf`: no vendor target does);
- `gpu_s`: GPU-seconds on the vLLM target (`inf` or `nan`: it has none);
- `gpu_cost_usd`: the marginal cost of those GPU-seconds (0 when the GPUs are reserved);
- `level`: the index of its deadline in `cap_s`, which holds the GPU-seconds usable before
  each deadline level, ascending (cumulative, so non-decreasing).

Capacity is a chain of constraints: the GPU-seconds of the requests due by level k may not
exceed `cap_s[k]`, for every k. Requests go to the GPU in order of saving per GPU-second
(requests no vendor can finish in time first, smallest first), each taken when it fits
every constraint from its level up. That is the greedy that solves the fractional problem
exactly (the constraints form a polymatroid), so the plan is within one request's saving
per deadline level of the LP optimum. Blocks of requests are checked at once with
numpy and split only where capacity runs out, so a million requests take well under a
second. A request goes to the GPU only when that saves money, so no request costs more
than on its cheapest vendor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_FIRST_BLOCK = 4096
_MAX_BLOCK = 65536
_ONE_BY_ONE = 16  # blocks this small that do not fit are decided request by request


@dataclass(frozen=True)
class Assignment:
    on_gpu: BoolArray  # runs on the vLLM target
    unmeetable: BoolArray  # no target finishes it before its deadline
    gpu_used_s: FloatArray  # GPU-seconds taken by requests due by each level (cumulative)

    @property
    def on_vendor(self) -> BoolArray:
        return ~self.on_gpu & ~self.unmeetable


def assign(
    vendor_cost_usd: FloatArray,
    gpu_s: FloatArray,
    gpu_cost_usd: FloatArray,
    level: IntArray,
    cap_s: FloatArray,
) -> Assignment:
    n = len(vendor_cost_usd)
    cap = np.asarray(cap_s, dtype=np.float64)
    level = np.asarray(level, dtype=np.int64)
    w = np.asarray(gpu_s, dtype=np.float64)
    on_gpu = np.zeros(n, dtype=bool)
    slack = cap.copy()
    if n and len(cap):
        eps = 1e-9 * max(float(cap.max()), 1.0)
        with np.errstate(invalid="ignore"):  # inf - inf: neither target; never a candidate
            saving = np.nan_to_num(vendor_cost_usd - gpu_cost_usd, nan=0.0)
        fits_alone = np.isfinite(w) & (w <= cap[level] + eps)
        cand = np.flatnonzero(fits_alone & (saving > 0))
        if cand.size:
            with np.errstate(over="ignore"):
                ratio = saving[cand] / np.maximum(w[cand], 1e-12)
            order = cand[np.lexsort((w[cand], -ratio))]
            _fill(order, w, level, slack, on_gpu, eps)
    unmeetable = ~on_gpu & ~np.isfinite(vendor_cost_usd)
    return Assignment(on_gpu=on_gpu, unmeetable=unmeetable, gpu_used_s=cap - slack)


def _fill(
    order: IntArray,
    w: FloatArray,
    level: IntArray,
    slack: FloatArray,
    on_gpu: BoolArray,
    eps: float,
) -> None:
    """Take requests in `order` while they fit; `slack[k]` = cap[k] - GPU-seconds due by k."""
    n_levels = len(slack)
    pos, block = 0, _FIRST_BLOCK
    while pos < len(order):
        taken = order[pos : pos + block]
        suffix_min = np.minimum.accumulate(slack[::-1])[::-1]
        idx = taken[w[taken] <= suffix_min[level[taken]] + eps]  # others can never fit again
        if idx.size:
            demand = np.cumsum(np.bincount(level[idx], weights=w[idx], minlength=n_levels))
            if np.all(demand <= slack + eps):
                slack -= demand
                on_gpu[idx] = True
            elif block > _ONE_BY_ONE:
                block //= 2
                continue
            else:
                for i in idx.tolist():
                    k, wi = int(level[i]), float(w[i])
                    if wi <= float(slack[k:].min()) + eps:
                        slack[k:] -= wi
                        on_gpu[i] = True
        pos += len(taken)
        block = min(block * 2, _MAX_BLOCK)


def total_cost_usd(a: Assignment, vendor_cost_usd: FloatArray, gpu_cost_usd: FloatArray) -> float:
    """The plan's cost over the requests it can run (unmeetable ones cost nothing)."""
    return float(gpu_cost_usd[a.on_gpu].sum() + vendor_cost_usd[a.on_vendor].sum())
