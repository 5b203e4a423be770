"""The assignment: worked examples with known optimal answers, and properties (hypothesis)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from batchd.planning.assignment import assign, total_cost_usd

INF = float("inf")


def _a(vendor, gpu_s, gpu_cost, level, cap):  # type: ignore[no-untyped-def]
    arr = np.asarray
    return assign(arr(vendor, float), arr(gpu_s, float), arr(gpu_cost, float), arr(level), cap)


def test_fills_gpu_with_biggest_saving_per_gpu_second() -> None:
    # Savings per GPU-second: a 10/5=2, b 9/3=3, c 4/4=1, d 1/1=1. Capacity 8: b then a.
    a = _a([10, 9, 4, 1], [5, 3, 4, 1], [0, 0, 0, 0], [0, 0, 0, 0], np.array([8.0]))
    assert a.on_gpu.tolist() == [True, True, False, False]
    assert a.gpu_used_s.tolist() == [8.0]


def test_skips_a_request_that_does_not_fit_and_takes_a_smaller_one() -> None:
    a = _a([12, 9, 1], [5, 4, 1], [0, 0, 0], [0, 0, 0], np.array([6.0]))  # 2.4, 2.25, 1 per s
    assert a.on_gpu.tolist() == [True, False, True]


def test_never_sends_to_gpu_what_a_vendor_does_cheaper() -> None:
    # On-demand GPUs: request 2's GPU time costs more than its vendor batch.
    a = _a([1.0, 0.5], [1, 1], [0.6, 0.6], [0, 0], np.array([100.0]))
    assert a.on_gpu.tolist() == [True, False]
    assert total_cost_usd(a, np.array([1.0, 0.5]), np.array([0.6, 0.6])) == pytest.approx(1.1)


def test_early_deadline_capacity_kept_for_requests_that_need_it() -> None:
    # Level 0 (due soon): 4 GPU-s before it, only the GPU can make it (vendor inf).
    # Level 1 (later): 10 GPU-s in all. The big later saver must not eat level 0's time.
    a = _a([INF, 100.0, 1.0], [4, 6, 4], [0, 0, 0], [0, 1, 1], np.array([4.0, 10.0]))
    assert a.on_gpu.tolist() == [True, True, False]
    assert not a.unmeetable.any()
    assert a.gpu_used_s.tolist() == [4.0, 10.0]


def test_request_no_target_can_finish_is_unmeetable() -> None:
    # No vendor in time, and 5 GPU-s needed with 3 available before its deadline.
    a = _a([INF, INF], [5, 2], [0, 0], [0, 0], np.array([3.0]))
    assert a.on_gpu.tolist() == [False, True]
    assert a.unmeetable.tolist() == [True, False]


def test_no_gpu_target_goes_to_vendor() -> None:
    a = _a([2.0, 3.0], [INF, np.nan], [0, 0], [0, 0], np.array([1e9]))
    assert a.on_vendor.all()


def test_large_block_path_matches_one_by_one() -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    vendor = rng.uniform(0.001, 0.01, n)
    gpu_s = rng.uniform(0.1, 2.0, n)
    level = rng.integers(0, 5, n)
    cap = np.cumsum(rng.uniform(1000, 5000, 5))
    a = assign(vendor, gpu_s, np.zeros(n), level, cap)
    # Every constraint holds and is (nearly) saturated: nothing that fits was left out.
    used = np.cumsum(np.bincount(level[a.on_gpu], weights=gpu_s[a.on_gpu], minlength=5))
    assert np.all(used <= cap + 1e-6)
    left = ~a.on_gpu
    for k in range(5):
        slack = (cap - used)[k:].min()
        assert not np.any(left & (level == k) & (gpu_s <= slack - 1e-9))


# --- properties against an exact oracle ----------------------------------------------------


def _lp_cost(vendor, gpu_s, gpu_cost, level, cap):  # type: ignore[no-untyped-def]
    """Fractional optimum (scipy): x_i = share of request i on the GPU."""
    n = len(vendor)
    ok = np.isfinite(gpu_s)
    vend = np.where(np.isfinite(vendor), vendor, 1e6)  # must-GPU: huge penalty on vendor
    c = np.where(ok, gpu_cost - vend, 0.0)
    a_ub = np.array(
        [[gpu_s[i] if ok[i] and level[i] <= k else 0.0 for i in range(n)] for k in range(len(cap))]
    )
    res = linprog(c, A_ub=a_ub, b_ub=cap, bounds=[(0, 1 if ok[i] else 0) for i in range(n)])
    assert res.status == 0
    return float(res.fun + vend.sum())


def _brute_cost(vendor, gpu_s, gpu_cost, level, cap):  # type: ignore[no-untyped-def]
    best = INF
    for pick in itertools.product([False, True], repeat=len(vendor)):
        on = np.array(pick)
        if np.any(on & ~np.isfinite(gpu_s)):
            continue
        used = np.cumsum(np.bincount(level[on], weights=gpu_s[on], minlength=len(cap)))
        if np.any(used > cap + 1e-9):
            continue
        vend = np.where(np.isfinite(vendor), vendor, 1e6)
        best = min(best, float(gpu_cost[on].sum() + vend[~on].sum()))
    return best


@st.composite
def workloads(draw: st.DrawFn, max_n: int = 9):  # type: ignore[no-untyped-def]
    n = draw(st.integers(1, max_n))
    n_levels = draw(st.integers(1, 3))
    money = st.floats(0.0, 10.0, allow_nan=False)
    vendor = np.array([draw(st.one_of(money, st.just(INF))) for _ in range(n)])
    gpu_s = np.array([draw(st.one_of(st.floats(0.01, 10.0), st.just(INF))) for _ in range(n)])
    reserved = draw(st.booleans())
    gpu_cost = np.zeros(n) if reserved else np.array([draw(money) for _ in range(n)])
    level = np.array([draw(st.integers(0, n_levels - 1)) for _ in range(n)])
    cap = np.cumsum([draw(st.floats(0.0, 20.0)) for _ in range(n_levels)])
    return vendor, gpu_s, gpu_cost, level, cap


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_properties(w) -> None:  # type: ignore[no-untyped-def]
    vendor, gpu_s, gpu_cost, level, cap = w
    a = assign(vendor, gpu_s, gpu_cost, level, cap)
    on = a.on_gpu
    # Capacity before every deadline level is respected.
    used = np.cumsum(np.bincount(level[on], weights=gpu_s[on], minlength=len(cap)))
    assert np.all(used <= cap + 1e-6)
    np.testing.assert_allclose(a.gpu_used_s, used, atol=1e-6)
    # Each request ends in exactly one place; GPU only where it has a GPU target.
    assert not np.any(on & a.unmeetable) and np.all(np.isfinite(gpu_s[on]))
    # Unmeetable only when no vendor can finish it, and it could not fit on the GPU.
    assert np.all(~np.isfinite(vendor[a.unmeetable]))
    # Never above the all-vendor cost, request by request.
    assert np.all(gpu_cost[on] <= vendor[on] + 1e-12)
    # Every request the GPU could still take alone (deadline-wise) and would save on is
    # taken, or does not fit in what is left (nothing meetable is needlessly missed).
    slack_from = np.minimum.accumulate((cap - used)[::-1])[::-1]
    left = ~on & np.isfinite(gpu_s) & (gpu_cost < vendor)
    assert not np.any(left & (gpu_s <= slack_from[level] - 1e-6))


@settings(max_examples=60, deadline=None)
@given(workloads(max_n=8))
def test_against_exact_optimum(w) -> None:  # type: ignore[no-untyped-def]
    vendor, gpu_s, gpu_cost, level, cap = w
    a = assign(vendor, gpu_s, gpu_cost, level, cap)
    vend = np.where(np.isfinite(vendor), vendor, 1e6)
    cost = float(gpu_cost[a.on_gpu].sum() + vend[~a.on_gpu].sum())
    best = _brute_cost(vendor, gpu_s, gpu_cost, level, cap)
    lp = _lp_cost(vendor, gpu_s, gpu_cost, level, cap)
    assert lp <= best + 1e-6 <= cost + 2e-6  # the oracles agree with each other
    # Greedy is within one request's saving per deadline level of the LP bound.
    saving = np.where(np.isfinite(gpu_s), vend - gpu_cost, 0.0)
    assert cost <= lp + len(cap) * max(float(saving.max()), 0.0) + 1e-6
