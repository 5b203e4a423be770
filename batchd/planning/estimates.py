"""The planner's estimates: tokens, cost per target and GPU-seconds, vectorised over requests.

Requests are kept per *target set* (one per requested model or alias) as flat arrays while
ingest streams, then priced all at once (DESIGN §4 "Planner"); a one-vendor-target set is
priced in slices of PRICE_SLICE as it fills, its arrays dropped (`Planner.fold_part`):

- input tokens: the vLLM model's own tokenizer when its tokenizer.json is there, else the
  request line's bytes / bytes-per-token (learned per model from earlier runs' usage;
  default `planner.bytes_per_token`);
- output tokens: max_tokens x the output/max ratio measured on earlier runs, else
  `planner.output_ratio` x max_tokens, else min(max_tokens, estimate_output_tokens);
- vendor cost: tokens x batch price, the input part at the measured prompt-cache read share,
  for requests due after the batch turnaround percentile of that vendor and model
  (`planning.turnaround`: measured, else the probes' prior, else `vendor_window_h`);
  a request due sooner is planned straight to the deadline guard's synchronous tiers
  (`sync_tier`): OpenAI flex at the batch price where the model has it, else the standard
  tier / Claude Messages API at the list price; none under `fallback = "none"`;
- the guard's worst case: every vendor request served synchronously at the list price
  (flex price under `fallback = "flex"`);
- vLLM: GPU-seconds = tokens / measured tokens per GPU-second (per model and GPU type), else
  the configured `throughput_tokens_per_s` per engine; cost = GPU-seconds x gpu_hourly_usd,
  and a marginal cost of 0 when the window GPUs are reserved (sunk: fill them first).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from batchd.backends.openai_sync import has_flex
from batchd.config.pricing import PER_MTOK, PriceBook
from batchd.config.settings import Settings
from batchd.planning.assignment import Assignment, assign
from batchd.planning.capacity import gpu_capacity_s
from batchd.planning.observations import Observations
from batchd.planning.turnaround import turnaround_s

F64 = npt.NDArray[np.float64]
VLLM = "vllm"
DEFAULT_VLLM_TOKENS_PER_S = 1000.0  # per GPU, before any run measured it or settings say
PRICE_SLICE = 1 << 16  # requests of a one-target set priced at once (finish memory stays flat)
DEADLINE_QUANTUM_S = 60.0  # deadlines are rounded down to the minute for capacity levels
MIN_SYNC_S = 60.0  # a synchronous call needs at least this long before the deadline
SYNC_BACKENDS = ("openai", "anthropic")


@dataclass
class TargetSet:
    """The requests of one requested model (or alias) and where they may run."""

    name: str  # the model or alias the lines asked for
    targets: list[tuple[str, str]]  # (backend, model)
    reference: str  # realtime model priced as the baseline ("" = none)
    line_bytes: array[int] = field(default_factory=lambda: array("q"))  # n x len(targets)
    max_tokens: array[int] = field(default_factory=lambda: array("q"))
    deadline_at: array[float] = field(default_factory=lambda: array("d"))
    prompt_tokens: array[int] = field(default_factory=lambda: array("q"))  # -1: unknown
    keys: bytearray = field(default_factory=bytearray)
    # per request: its target's column or UNMEETABLE (int8 in a streamed set: see `streamed`)
    choice: npt.NDArray[np.signedinteger[Any]] = field(
        default_factory=lambda: np.zeros(0, np.int64)
    )
    # One vendor target: requests are chunked as they come; keys kept only for failures.
    failed_keys: dict[int, bytes] = field(default_factory=dict)

    direct: bool = False
    # A one-vendor-target set priced as it fills (Planner.fold_part): the requests before
    # `base` were decided and dropped; of them only the unmeetable ones' deadlines are kept.
    early: bool = False
    base: int = 0
    folded_failed: dict[int, float] = field(default_factory=dict)  # index -> deadline_at
    folded_latest: float = float("-inf")  # the latest deadline of the dropped requests
    blocked: npt.NDArray[np.bool_] | None = None  # n x t: the target may not take the request

    def __post_init__(self) -> None:
        self.direct = len(self.targets) == 1 and self.targets[0][0] != VLLM

    def add(
        self, lens: list[int], max_tokens: int, deadline_at: float, key: bytes, prompt_tokens: int
    ) -> int:
        self.line_bytes.extend(lens)
        self.max_tokens.append(max_tokens)
        self.deadline_at.append(deadline_at)
        self.prompt_tokens.append(prompt_tokens)
        self.keys += key
        return len(self.max_tokens) - 1

    def __len__(self) -> int:
        return len(self.max_tokens)

    @property
    def streamed(self) -> bool:
        """One vendor target, no guard gate: decided slice by slice, never in the GPU fill."""
        return self.direct and self.blocked is None

    def drop_decided(self) -> None:
        """Keep of the decided requests only what finish needs: unmeetable ones, latest."""
        d = np.frombuffer(self.deadline_at, dtype=np.float64)
        for i in np.flatnonzero(self.choice == UNMEETABLE).tolist():
            self.folded_failed[self.base + i] = float(d[i])
        if len(d):
            self.folded_latest = max(self.folded_latest, float(d.max()))
        self.base += len(self)
        self.line_bytes, self.max_tokens = array("q"), array("q")
        self.deadline_at, self.prompt_tokens = array("d"), array("q")
        self.choice = np.zeros(0, np.int64)

    def part(self, lo: int, hi: int) -> TargetSet:
        """Requests lo..hi of a one-target set (its own copy of their arrays)."""
        p = TargetSet(self.name, self.targets, self.reference)
        p.line_bytes, p.max_tokens = self.line_bytes[lo:hi], self.max_tokens[lo:hi]
        p.deadline_at = self.deadline_at[lo:hi]
        if len(self.prompt_tokens) == len(self):
            p.prompt_tokens = self.prompt_tokens[lo:hi]
        return p


UNMEETABLE = -1  # choice of a request no target finishes in time
# called per priced slice of a streamed set: (set, the slice's choices, its estimates)
Fold = Callable[[TargetSet, npt.NDArray[np.signedinteger[Any]], "Priced"], None]


@dataclass
class Priced:
    """One target set's estimates: per request and target (n x t)."""

    input_tokens: F64
    output_tokens: F64
    output_tokens_max: F64
    cost_usd: F64  # inf where the target cannot take the request (deadline, unsupported)
    cost_max_usd: F64
    guard_worst_usd: F64  # the vendor target's cost if the guard sends it synchronously
    sync: npt.NDArray[np.bool_]  # planned straight to the synchronous tiers (not a batch)
    gpu_s: F64  # per request on the vLLM target (inf: none)
    gpu_marginal_usd: F64
    baseline_usd: F64  # per request


class Planner:
    def __init__(
        self,
        settings: Settings,
        prices: PriceBook,
        observations: Observations,
        now: float,
        committed_gpu_s: float = 0.0,
    ) -> None:
        """`committed_gpu_s`: GPU work other unfinished runs queued; it comes off the capacity
        before every deadline (conservative: their deadlines are not known here)."""
        self.committed_gpu_s = committed_gpu_s
        self.settings = settings
        self.prices = prices
        self.obs = observations
        self.now = now
        self._ready_at: dict[tuple[str, str], float] = {}
        self.turnaround: dict[str, tuple[float, str]] = {}  # "backend:model" -> (s, source)
        v = settings.backends.vllm
        measured = observations.tokens_per_gpu_s(v.name, v.gpu_type)
        configured = v.throughput_tokens_per_s / max(v.num_gpus, 1)
        self.tokens_per_gpu_s = measured or configured or DEFAULT_VLLM_TOKENS_PER_S
        self.gpu_usd_per_s = v.gpu_hourly_usd / 3600.0
        self.capacity_s = 0.0
        self.gpu_used_s = 0.0
        self.price_slice = PRICE_SLICE  # requests of a streamed set priced at once

    def ready_at(self, backend: str, model: str) -> float:
        """When a batch of this vendor and model submitted now counts as done."""
        key = (backend, model)
        at = self._ready_at.get(key)
        if at is None:
            took_s, source = turnaround_s(self.settings, self.obs.sums, backend, model)
            self.turnaround[f"{backend}:{model}"] = (took_s, source)
            at = self._ready_at[key] = self.now + took_s
        return at

    def sync_tier(self, backend: str, model: str) -> str | None:
        """The chunk tier the guard sends this target with: realtime | flex | None (none)."""
        fallback = self.settings.fallback
        if fallback == "none" or backend not in SYNC_BACKENDS:
            return None
        flex = backend == "openai" and has_flex(self.settings.openai.flex_models, model)
        if fallback == "flex" and not flex:
            return None
        return fallback

    def _sync_price_share(self, backend: str, model: str, discount: float) -> tuple[float, float]:
        """(expected, worst) share of the list price when sent synchronously; inf: cannot."""
        tier = self.sync_tier(backend, model)
        if tier is None:
            return np.inf, np.inf
        flex = backend == "openai" and has_flex(self.settings.openai.flex_models, model)
        return (discount if flex else 1.0), (discount if tier == "flex" else 1.0)

    # --- estimates ------------------------------------------------------------------------
    def _bytes_per_token(self, model: str) -> float:
        return self.obs.bytes_per_token(model) or self.settings.planner.bytes_per_token

    def _output(self, model: str, max_eff: F64) -> F64:
        ratio = self.obs.output_ratio(model) or self.settings.planner.output_ratio
        if ratio > 0:
            return np.minimum(max_eff * ratio, max_eff)
        return np.minimum(max_eff, float(self.settings.estimate_output_tokens))

    def price(self, ts: TargetSet) -> Priced:
        n, t = len(ts), len(ts.targets)
        lens = np.frombuffer(ts.line_bytes, dtype=np.int64).reshape(n, t).astype(np.float64)
        max_tokens = np.frombuffer(ts.max_tokens, dtype=np.int64).astype(np.float64)
        max_eff = np.where(max_tokens > 0, max_tokens, float(self.settings.estimate_output_tokens))
        deadline = np.frombuffer(ts.deadline_at, dtype=np.float64)
        prompt = np.full(n, -1.0)
        if len(ts.prompt_tokens) == n:
            prompt = np.frombuffer(ts.prompt_tokens, dtype=np.int64).astype(np.float64)
        inp = np.zeros((n, t))
        out = np.zeros((n, t))
        cost = np.full((n, t), np.inf)
        cost_max = np.full((n, t), np.inf)
        worst = np.full((n, t), np.inf)
        sync = np.zeros((n, t), dtype=bool)
        gpu_s = np.full(n, np.inf)
        for j, (backend, model) in enumerate(ts.targets):
            supported = lens[:, j] > 0
            by_bytes = np.ceil(lens[:, j] / self._bytes_per_token(model))
            out[:, j] = self._output(model, max_eff)
            if backend == VLLM:
                inp[:, j] = np.where(prompt >= 0, prompt, by_bytes)
                secs = (inp[:, j] + out[:, j]) / self.tokens_per_gpu_s
                gpu_s = np.where(supported, secs, np.inf)
                cost[:, j] = np.where(supported, secs * self.gpu_usd_per_s, np.inf)
                secs_max = (inp[:, j] + max_eff) / self.tokens_per_gpu_s
                cost_max[:, j] = np.where(supported, secs_max * self.gpu_usd_per_s, np.inf)
                continue
            inp[:, j] = by_bytes
            price = self.prices.lookup(model)
            if price is None:
                continue
            share = self.obs.cached_share(model)
            in_usd = (1 - share) * price.input_per_mtok + share * price.cached_input_per_mtok
            per_req = (inp[:, j] * in_usd + out[:, j] * price.output_per_mtok) / PER_MTOK
            per_max = (inp[:, j] * in_usd + max_eff * price.output_per_mtok) / PER_MTOK
            ok = supported & (deadline >= self.ready_at(backend, model))
            share, worst_share = self._sync_price_share(backend, model, price.batch_discount)
            sync[:, j] = supported & ~ok & (deadline >= self.now + MIN_SYNC_S) & np.isfinite(share)
            disc = np.where(ok, price.batch_discount, np.where(sync[:, j], share, np.inf))
            priced = np.isfinite(disc)
            cost[:, j] = np.where(priced, per_req * np.where(priced, disc, 0), np.inf)
            cost_max[:, j] = np.where(priced, per_max * np.where(priced, disc, 0), np.inf)
            worst[:, j] = np.where(ok | sync[:, j], per_req * worst_share, np.inf)
            if not np.isfinite(worst_share):  # no guard: the batch price is the worst case
                worst[:, j] = cost[:, j]
        if ts.blocked is not None:  # the quality guard's gate (planning/shadows.py)
            for a in (cost, cost_max, worst):
                a[ts.blocked] = np.inf
            sync[ts.blocked] = False
            for j, (backend, _) in enumerate(ts.targets):
                if backend == VLLM:
                    gpu_s = np.where(ts.blocked[:, j], np.inf, gpu_s)
        baseline = np.zeros(n)
        ref = self.prices.lookup(ts.reference) if ts.reference else None
        if ref is not None:
            ref_in = np.ceil(lens.max(axis=1) / self._bytes_per_token(ts.reference))
            ref_out = self._output(ts.reference, max_eff)
            baseline = (ref_in * ref.input_per_mtok + ref_out * ref.output_per_mtok) / PER_MTOK
        marginal = np.zeros(n) if self.settings.planner.gpu_reserved else gpu_s * self.gpu_usd_per_s
        return Priced(
            inp,
            out,
            np.broadcast_to(max_eff[:, None], (n, t)).copy(),
            cost,
            cost_max,
            worst,
            sync,
            gpu_s,
            marginal,
            baseline,
        )

    # --- assignment ---------------------------------------------------------------------
    def decide(self, sets: list[TargetSet], fold: Fold | None = None) -> dict[str, Priced]:
        """Set each target set's `choice` (target index, or UNMEETABLE); return the estimates.

        With `fold`, streamed sets (one vendor target: `TargetSet.streamed`) are priced in
        slices of PRICE_SLICE handed to `fold`, and are not in the returned dict. Their
        requests never run on the GPU, so only their latest deadline (the last capacity
        level, as if they were in the fill) counts for the others.
        """
        streamed = [ts for ts in sets if fold is not None and ts.streamed]
        latest: list[float] = []
        for ts in streamed:
            assert fold is not None
            self._decide_streamed(ts, fold)
            if ts.base:
                latest.append(ts.folded_latest)
            if len(ts):
                latest.append(float(np.frombuffer(ts.deadline_at, dtype=np.float64).max()))
        placed = [ts for ts in sets if not (fold is not None and ts.streamed)]
        priced = {ts.name: self.price(ts) for ts in placed}
        vendor_parts, gpu_parts, marginal_parts = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
        deadline_parts = [np.zeros(0)]
        for ts in placed:
            p = priced[ts.name]
            vendor_cols = [j for j, (b, _) in enumerate(ts.targets) if b != VLLM]
            vendor = (
                p.cost_usd[:, vendor_cols].min(axis=1) if vendor_cols else np.full(len(ts), np.inf)
            )
            vendor_parts.append(vendor)
            gpu_parts.append(p.gpu_s)
            marginal_parts.append(p.gpu_marginal_usd)
            deadline_parts.append(np.frombuffer(ts.deadline_at, dtype=np.float64))
        if not sets:
            return priced
        vendor = np.concatenate(vendor_parts)
        gpu_s = np.concatenate(gpu_parts)
        deadlines = np.concatenate(deadline_parts)
        quantized = _quantized(deadlines)
        levels = np.unique(np.concatenate([quantized, _quantized(np.array(latest))]))
        level = np.searchsorted(levels, quantized)
        uses_gpu = bool(np.isfinite(gpu_s).any())
        cap = np.zeros(len(levels))
        if uses_gpu:
            cap = np.maximum(
                gpu_capacity_s(self.settings, self.now, levels) - self.committed_gpu_s, 0
            )
        a = assign(vendor, gpu_s, np.concatenate(marginal_parts), level.astype(np.int64), cap)
        self.capacity_s = float(cap[-1]) if len(cap) and uses_gpu else 0.0
        self.gpu_used_s = float(a.gpu_used_s[-1]) if len(cap) and uses_gpu else 0.0
        self._set_choices(placed, priced, a)
        return priced

    def fold_part(self, ts: TargetSet, fold: Fold) -> None:
        """Decide a streamed set's requests so far, hand their estimates to `fold`, drop them
        (ingest of a huge file: the set's per-request arrays stay at one slice)."""
        self._decide_streamed(ts, fold)
        ts.drop_decided()

    def _decide_streamed(self, ts: TargetSet, fold: Fold) -> None:
        """A one-vendor-target set: each request runs there, or is unmeetable (no price)."""
        n = len(ts)
        choice = np.empty(n, dtype=np.int8)
        for lo in range(0, n, self.price_slice):
            hi = min(lo + self.price_slice, n)
            p = self.price(ts.part(lo, hi))
            part = np.where(np.isfinite(p.cost_usd[:, 0]), 0, UNMEETABLE).astype(np.int8)
            choice[lo:hi] = part
            fold(ts, part, p)
        ts.choice = choice

    def _set_choices(self, sets: list[TargetSet], priced: dict[str, Priced], a: Assignment) -> None:
        start = 0
        for ts in sets:
            n = len(ts)
            p = priced[ts.name]
            on_gpu = a.on_gpu[start : start + n]
            unmeetable = a.unmeetable[start : start + n]
            vendor_cost = p.cost_usd.copy()
            gpu_cols = [j for j, (b, _) in enumerate(ts.targets) if b == VLLM]
            vendor_cost[:, gpu_cols] = np.inf
            choice = np.argmin(vendor_cost, axis=1).astype(np.int64)
            if gpu_cols:
                choice[on_gpu] = gpu_cols[0]
            choice[unmeetable] = UNMEETABLE
            ts.choice = choice
            start += n


def _quantized(deadlines: F64) -> F64:
    return np.floor(np.minimum(deadlines, 1e15) / DEADLINE_QUANTUM_S) * DEADLINE_QUANTUM_S
