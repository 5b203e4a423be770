"""What earlier runs measured, for the planner's estimates (DESIGN §4 "finalize").

At finalize every chunk's outcomes are summed into ratios kept in the store as
(numerator, denominator) sums, so later runs add to them:
- `bpt|<model>`: request-line bytes per input token (vendor token estimates);
- `out|<model>`: output tokens per max_tokens;
- `cached|<model>`: share of input tokens read from the vendor's prompt cache;
- `tput|<model>|<gpu_type>`: tokens (input + output) per GPU-second on vLLM;
- `turn|<vendor>|<model>|<bucket>`, `turnlines|...`, `turntok|...`: each vendor batch's
  submit -> end seconds as a histogram, with its lines and tokens (`turnaround`);
- `quota|<vendor>|<model>`: the vendor's enqueued-token cap, learned from batches it failed
  with `token_limit_exceeded` (the mean of what those failures told; `run.quota`).
"""

from __future__ import annotations

from collections import defaultdict

from batchd.outcome import SUCCEEDED, Outcome
from batchd.planning.turnaround import lines_key, tokens_key, turnaround_key
from batchd.state.base import Chunk

Sums = dict[str, tuple[float, float]]
VLLM = "vllm"
NOT_VENDOR = frozenset({VLLM, "planner"})
# Ended batches whose time says how long the vendor takes (a cancel or rejection does not).
TIMED_STATUSES = frozenset({"completed", "ended", "expired", "succeeded"})  # + Gemini


def bytes_per_token_key(model: str) -> str:
    return f"bpt|{model}"


def output_ratio_key(model: str) -> str:
    return f"out|{model}"


def cached_share_key(model: str) -> str:
    return f"cached|{model}"


def throughput_key(model: str, gpu_type: str) -> str:
    return f"tput|{model}|{gpu_type or 'default'}"


def quota_key(vendor: str, model: str) -> str:
    return f"quota|{vendor}|{model}"


class Observations:
    """Ratios measured on earlier runs; None where nothing was measured yet."""

    def __init__(self, sums: Sums | None = None) -> None:
        self._sums = sums or {}

    def ratio(self, key: str) -> float | None:
        num, den = self._sums.get(key, (0.0, 0.0))
        return num / den if den > 0 and num > 0 else None

    def bytes_per_token(self, model: str) -> float | None:
        return self.ratio(bytes_per_token_key(model))

    def output_ratio(self, model: str) -> float | None:
        return self.ratio(output_ratio_key(model))

    def cached_share(self, model: str) -> float:
        return self.ratio(cached_share_key(model)) or 0.0

    def tokens_per_gpu_s(self, model: str, gpu_type: str) -> float | None:
        return self.ratio(throughput_key(model, gpu_type))

    def enqueued_token_limit(self, vendor: str, model: str) -> int | None:
        learned = self.ratio(quota_key(vendor, model))
        return max(int(learned), 1) if learned else None

    @property
    def sums(self) -> Sums:
        return self._sums


def batch_turnaround_s(chunk: Chunk) -> float | None:
    """Submit -> end seconds of a vendor batch that ran its course; None for any other."""
    if (
        chunk.backend in NOT_VENDOR
        or chunk.tier != "batch"
        or chunk.cancel_reason is not None
        or chunk.vendor_status not in TIMED_STATUSES
        or chunk.submitted_at is None
        or chunk.ended_at is None
    ):
        return None
    return max(chunk.ended_at - chunk.submitted_at, 0.0)


class _ChunkSums:
    __slots__ = ("cached", "gpu_s", "gpu_tokens", "input", "output", "succeeded")

    def __init__(self) -> None:
        self.succeeded = 0
        self.input = self.cached = self.output = self.gpu_tokens = 0
        self.gpu_s = 0.0


class Observer:
    """Sums one run's outcomes per chunk, then turns them into ratio sums for the store."""

    def __init__(self, gpu_type: str) -> None:
        self._gpu_type = gpu_type
        self._chunks: dict[str, tuple[Chunk, _ChunkSums]] = {}

    def add(self, chunk: Chunk, o: Outcome) -> None:
        entry = self._chunks.get(chunk.chunk_id)
        if entry is None:
            entry = self._chunks[chunk.chunk_id] = (chunk, _ChunkSums())
        s = entry[1]
        if o.gpu_seconds > 0:
            s.gpu_s += o.gpu_seconds
            s.gpu_tokens += o.input_tokens + o.output_tokens
        if o.status == SUCCEEDED and o.input_tokens > 0:
            s.succeeded += 1
            s.input += o.input_tokens
            s.cached += o.cached_input_tokens
            s.output += o.output_tokens

    def add_totals(
        self,
        chunk: Chunk,
        *,
        gpu_seconds: list[float],
        gpu_tokens: int,
        succeeded: int,
        input_tokens: int,
        cached_input_tokens: int,
        output_tokens: int,
    ) -> None:
        """As add() of many outcomes of one chunk, given their sums (`gpu_seconds`: each
        outcome's that is > 0, in order, added one by one as add() does)."""
        entry = self._chunks.get(chunk.chunk_id)
        if entry is None:
            entry = self._chunks[chunk.chunk_id] = (chunk, _ChunkSums())
        s = entry[1]
        for g in gpu_seconds:
            s.gpu_s += g
        s.gpu_tokens += gpu_tokens
        s.succeeded += succeeded
        s.input += input_tokens
        s.cached += cached_input_tokens
        s.output += output_tokens

    def sums(self) -> Sums:
        out: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

        def add(key: str, num: float, den: float) -> None:
            out[key][0] += num
            out[key][1] += den

        for chunk, s in self._chunks.values():
            model = chunk.model
            took_s = batch_turnaround_s(chunk)
            if took_s is not None:
                add(turnaround_key(chunk.backend, model, took_s), took_s, 1)
                add(lines_key(chunk.backend, model), chunk.n_requests, 1)
                add(tokens_key(chunk.backend, model), s.input + s.output, 1)
            if s.gpu_s > 0:
                add(throughput_key(model, self._gpu_type), s.gpu_tokens, s.gpu_s)
            if not s.succeeded or not chunk.n_requests:
                continue
            share = s.succeeded / chunk.n_requests
            if chunk.backend != VLLM:
                add(bytes_per_token_key(model), chunk.n_bytes * share, s.input)
                add(cached_share_key(model), s.cached, s.input)
            if chunk.est_max_tokens:
                add(output_ratio_key(model), s.output, chunk.est_max_tokens * share)
        return {k: (v[0], v[1]) for k, v in out.items() if v[1] > 0}
