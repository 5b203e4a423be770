"""Planner benchmark (DESIGN §7): batchd's plan against the LP optimum and naive strategies.

Simulated workloads (no files, no ingest: `bench/ingest.py` measures that) are fed to the
planner exactly as ingest leaves them, one target set per requested model or alias:

- sizes 10k to 1M input lines, with a duplicate ratio (duplicates never reach the planner:
  the unique requests are lines x (1 - dup));
- mixed models: aliases `small` (vllm + gpt-5.4-nano), `medium` (vllm + gpt-5.4-mini +
  claude-haiku-4-5), and concrete gpt-5.4-mini / claude-sonnet-4-6 lines;
- mixed deadlines: the run's 48 h (two nights of GPU time before it), per-line 36 h and 30 h
  (one night), and 12 h on concrete vendor lines (nothing can meet it: unmeetable);
- tight or loose GPU capacity: nightly windows (22:00 on, on-demand GPUs at $2.5/h, 12,000
  tokens/s each) holding 1/4 or 4x the GPU-seconds of every request the GPU would do cheaper.

Columns: planning time (pricing + assignment), batchd's cost, the LP optimum (fractional, a
lower bound on any plan: scipy HiGHS up to --lp-max requests, the exact fractional greedy
above; `--lp-max 0` shows the two agree), the gap, and the naive strategies: every request
at realtime list price, and every request on its cheapest vendor batch. Requests nobody can
finish in time are charged their realtime list price in every column, so the columns compare
like with like.

    python bench/planner.py [--sizes 10000 100000 1000000] [--lp-max 100000] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchd.config.pricing import load_price_book
from batchd.config.settings import Settings, load_settings
from batchd.planning.assignment import assign
from batchd.planning.capacity import gpu_capacity_s
from batchd.planning.estimates import DEADLINE_QUANTUM_S, UNMEETABLE, Planner, TargetSet
from batchd.planning.observations import Observations

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()  # Monday noon UTC
H = 3600.0
SETS = (  # name, targets, reference, share of requests
    ("small", [("vllm", "qwen-7b-awq"), ("openai", "gpt-5.4-nano")], "gpt-5.4-nano", 0.45),
    (
        "medium",
        [("vllm", "qwen-7b-awq"), ("openai", "gpt-5.4-mini"), ("anthropic", "claude-haiku-4-5")],
        "gpt-5.4-mini",
        0.30,
    ),
    ("gpt-5.4-mini", [("openai", "gpt-5.4-mini")], "gpt-5.4-mini", 0.15),
    ("claude-sonnet-4-6", [("anthropic", "claude-sonnet-4-6")], "claude-sonnet-4-6", 0.10),
)
# Alias lines: due in 48 h (two nights of GPU time), 36 h, or 30 h (one night); a vendor
# batch is always in time for them, so the LP below is a true lower bound. Concrete vendor
# lines: some due in 12 h, which nothing can meet (same in every column).
ALIAS_DEADLINES_H = ((48.0, 36.0, 30.0), (0.5, 0.3, 0.2))
VENDOR_DEADLINES_H = ((48.0, 36.0, 12.0), (0.6, 0.3, 0.1))
CAPACITY = {"tight": 0.25, "loose": 4.0}  # GPU-seconds in the windows / what would pay off
MARGIN_S = 300


def _window_env(gpu_s: float) -> dict[str, str]:
    """A nightly window from 22:00 and enough 1-GPU workers to hold `gpu_s` GPU-seconds."""
    workers = max(1, int(np.ceil(gpu_s / (8 * H))))
    minutes = max(1, int(np.ceil((gpu_s / workers + MARGIN_S) / 60)))
    end = 22 * 60 + minutes
    return {
        "BATCHD_VLLM_WINDOWS": f"22:00-{end // 60 % 24:02d}:{end % 60:02d}",
        "BATCHD_PLANNER_GPU_WORKERS": str(workers),
    }


def settings_for(window: dict[str, str]) -> Settings:
    env = {
        "BATCHD_VLLM_MODEL": "/models/qwen-7b-awq",
        "BATCHD_VLLM_GPU_HOURLY_USD": "2.5",
        "BATCHD_VLLM_THROUGHPUT_TOKENS_PER_S": "12000",
        "BATCHD_VLLM_ADMIT_MARGIN_S": str(MARGIN_S),
        **window,
    }
    with tempfile.TemporaryDirectory() as tmp:  # no batchd.toml: the environment only
        empty = Path(tmp) / "batchd.toml"
        empty.write_text("")
        return load_settings(environ=env, config_path=empty)


def _fill(arr: array, values: np.ndarray) -> None:  # type: ignore[type-arg]
    arr.frombytes(np.ascontiguousarray(values).tobytes())


def workload(n_unique: int, rng: np.random.Generator) -> list[TargetSet]:
    sets = []
    counts = rng.multinomial(n_unique, [s[3] for s in SETS])
    for (name, targets, ref, _), n in zip(SETS, counts, strict=True):
        ts = TargetSet(name, list(targets), ref)
        prompt_bytes = rng.lognormal(np.log(1200), 0.8, n).astype(np.int64) + 120
        lens = np.repeat(prompt_bytes[:, None], len(targets), axis=1)
        _fill(ts.line_bytes, lens.astype(np.int64).ravel())
        _fill(ts.max_tokens, rng.choice([16, 64, 256, 1024], n, p=[0.3, 0.3, 0.3, 0.1]))
        choices, shares = VENDOR_DEADLINES_H if ts.direct else ALIAS_DEADLINES_H
        hours = rng.choice(choices, n, p=shares)
        _fill(ts.deadline_at, NOW + hours * H)
        if ts.direct:
            ts.failed_keys = {}
        else:
            _fill(ts.prompt_tokens, np.full(n, -1, dtype=np.int64))
            ts.keys = bytearray(16 * n)
        sets.append(ts)
    return sets


MUST_GPU_USD = 1e3  # vendor cost given to requests only the GPU can finish: they go first


def fractional_optimum(vendor, gpu_s, gpu_cost, level, cap, lp_max):  # type: ignore[no-untyped-def]
    """x_i in [0, 1], the share of request i on the GPU, minimising the LP's cost.

    scipy HiGHS up to lp_max candidates; above, the exact fractional greedy (the constraints
    form a chain, so taking requests by saving per GPU-second, each as far as it fits, is
    optimal for the LP; the two agree where both run).
    """
    v = np.where(np.isfinite(vendor), vendor, MUST_GPU_USD)
    saving = v - gpu_cost
    cand = np.flatnonzero(np.isfinite(gpu_s) & (saving > 0))
    x = np.zeros(len(vendor))
    if len(cand) <= lp_max:
        import scipy.sparse as sp
        from scipy.optimize import linprog

        rows, cols = [], []
        for k in range(len(cap)):
            members = np.flatnonzero(level[cand] <= k)
            rows.append(np.full(len(members), k))
            cols.append(members)
        r, c = np.concatenate(rows), np.concatenate(cols)
        a = sp.csr_matrix((gpu_s[cand][c], (r, c)), shape=(len(cap), len(cand)))
        res = linprog(-saving[cand], A_ub=a, b_ub=cap, bounds=(0, 1), method="highs")
        assert res.status == 0, res.message
        x[cand] = res.x
        return x, "scipy"
    order = cand[np.argsort(-saving[cand] / gpu_s[cand], kind="stable")]
    slack = [float(x) for x in cap]
    n_levels = len(slack)
    for i in order.tolist():
        k = int(level[i])
        avail = min(slack[k:])
        if avail <= 0:
            continue
        take = min(float(gpu_s[i]), avail)
        for j in range(k, n_levels):
            slack[j] -= take
        x[i] = take / gpu_s[i]
    return x, "greedy"


def run_case(n_lines: int, dup: float, capacity: str, lp_max: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    n_unique = int(n_lines * (1 - dup))
    sets = workload(n_unique, rng)
    # Size the window: the GPU-seconds of every request the GPU would do more cheaply.
    probe = settings_for(_window_env(1.0))
    pricer = Planner(probe, load_price_book(probe), Observations(), NOW)
    worth_s = 0.0
    for ts in sets:
        p = pricer.price(ts)
        vcols = [j for j, (b, _) in enumerate(ts.targets) if b != "vllm"]
        if len(vcols) < len(ts.targets):
            vendor = p.cost_usd[:, vcols].min(axis=1)
            pays = np.isfinite(vendor) & (vendor > p.gpu_marginal_usd)
            worth_s += float(p.gpu_s[pays].sum())
    # two nights fall before the 36 h and 48 h deadlines
    settings = settings_for(_window_env(worth_s * CAPACITY[capacity] / 2))
    planner = Planner(settings, load_price_book(settings), Observations(), NOW)
    t0 = time.perf_counter()
    priced = planner.decide(sets)
    plan_s = time.perf_counter() - t0
    # The same problem as arrays, for the bound and the naive strategies.
    vendor, gpu_s, marginal, deadline, realtime, chosen = [], [], [], [], [], []
    for ts in sets:
        p = priced[ts.name]
        vcols = [j for j, (b, _) in enumerate(ts.targets) if b != "vllm"]
        v = p.cost_usd[:, vcols].min(axis=1)
        vendor.append(v)
        gpu_s.append(p.gpu_s)
        marginal.append(p.gpu_marginal_usd)
        deadline.append(np.frombuffer(ts.deadline_at, dtype=np.float64))
        realtime.append(p.baseline_usd)
        rows = np.arange(len(ts))
        pick = np.where(ts.choice == UNMEETABLE, 0, ts.choice)
        cost = p.cost_usd[rows, pick]
        chosen.append(np.where(ts.choice == UNMEETABLE, p.baseline_usd, cost))
    v, g, m, d, rt = map(np.concatenate, (vendor, gpu_s, marginal, deadline, realtime))
    ours = float(np.concatenate(chosen).sum())
    # requests no vendor finishes in time are charged their realtime list price wherever they
    # are not (or, in the LP, the part not) on the GPU
    v_fallback = np.where(np.isfinite(v), v, rt)
    levels, level = np.unique(
        np.floor(d / DEADLINE_QUANTUM_S) * DEADLINE_QUANTUM_S, return_inverse=True
    )
    cap = gpu_capacity_s(settings, NOW, levels)
    t1 = time.perf_counter()
    x, how = fractional_optimum(v, g, m, level, cap, lp_max)
    g_cost = np.where(np.isfinite(g), g * planner.gpu_usd_per_s, 0.0)
    bound = float((x * g_cost + (1 - x) * v_fallback).sum())
    bound_s = time.perf_counter() - t1
    check = assign(v, g, m, level.astype(np.int64), cap)
    assert check.gpu_used_s[-1] <= cap[-1] + 1e-6
    return {
        "lines": n_lines,
        "dup": dup,
        "unique": n_unique,
        "capacity": capacity,
        "plan_s": plan_s,
        "cost": ours,
        "bound": bound,
        "bound_by": how,
        "bound_s": bound_s,
        "gap_pct": 100 * (ours - bound) / bound,
        "all_vendor": float(v_fallback.sum()),
        "all_realtime": float(rt.sum()),
        "gpu_used": planner.gpu_used_s,
        "gpu_cap": planner.capacity_s,
        "unmeetable": int(sum((ts.choice == UNMEETABLE).sum() for ts in sets)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dup", type=float, nargs="+", default=[0.3])
    ap.add_argument("--capacity", nargs="+", default=["tight", "loose"], choices=list(CAPACITY))
    ap.add_argument("--lp-max", type=int, default=100_000, help="largest LP given to scipy")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    head = (
        f"{'lines':>9} {'dup':>4} {'unique':>8} {'GPUs':>5} {'plan s':>7} {'batchd $':>10} "
        f"{'LP opt $':>10} {'by':>6} {'gap %':>6} {'all-vendor $':>12} {'all-realtime $':>14} "
        f"{'GPU-s used/cap':>20} {'unmeetable':>10}"
    )
    print(head)
    for n in args.sizes:
        for dup in args.dup:
            for cap in args.capacity:
                r = run_case(n, dup, cap, args.lp_max, args.seed)
                print(
                    f"{r['lines']:>9,} {r['dup']:>4} {r['unique']:>8,} {r['capacity']:>5} "
                    f"{r['plan_s']:>7.2f} {r['cost']:>10.2f} {r['bound']:>10.2f} "
                    f"{r['bound_by']:>6} {r['gap_pct']:>6.3f} {r['all_vendor']:>12.2f} "
                    f"{r['all_realtime']:>14.2f} "
                    f"{r['gpu_used']:>9,.0f}/{r['gpu_cap']:<10,.0f} {r['unmeetable']:>10,}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
