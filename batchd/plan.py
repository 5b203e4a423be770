"""Assign unique requests to backends and group them into chunks within each backend's limits.

Also estimates cost for `batchd plan`: input tokens ~ body bytes / 4 (offline, no
tokenizer download), output tokens ~ min(max_tokens, settings.estimate_output_tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import BinaryIO

import msgspec

from batchd.backends.base import BatchBackend
from batchd.pricing import PriceBook, Usage, unknown_model_message
from batchd.settings import Settings, VllmSettings
from batchd.store import Chunk

BYTES_PER_TOKEN_ESTIMATE = 4


class Route(msgspec.Struct, gc=False):
    backend: str
    model: str


class RouteError(msgspec.Struct, gc=False):
    error_type: str
    message: str


class Router:
    """Model name -> backend. A concrete vendor model has one choice."""

    def __init__(
        self,
        prices: PriceBook,
        backends: dict[str, BatchBackend],
        vllm: VllmSettings | None = None,
    ) -> None:
        self._prices = prices
        self._backends = backends
        self._memo: dict[str, Route | RouteError] = {}
        self._vllm_names: set[str] = set()
        self._vllm_model = ""
        self._reference = ""
        if vllm is not None and vllm.enabled and "vllm" in backends:
            self._vllm_model = vllm.name
            self._vllm_names = {vllm.name, f"vllm:{vllm.name}"}
            self._reference = vllm.reference_model

    def baseline_models(self) -> dict[str, str]:
        """Model names lines use -> the realtime model their baseline is priced at."""
        if not self._reference:
            return {}
        return dict.fromkeys(self._vllm_names, self._reference)

    def backend(self, name: str) -> BatchBackend:
        return self._backends[name]

    def route(self, model: str) -> Route | RouteError:
        hit = self._memo.get(model)
        if hit is None:
            hit = self._memo[model] = self._route(model)
        return hit

    def _route(self, model: str) -> Route | RouteError:
        if model in self._vllm_names:
            return Route("vllm", self._vllm_model)
        if model.startswith("vllm:"):
            return RouteError(
                "no_backend",
                f"model {model!r} asks for self-hosted vLLM, and the vLLM backend serves "
                f"{self._vllm_model or 'no model'}; set [backends.vllm] model in batchd.toml",
            )
        price = self._prices.lookup(model)
        if price is None:
            return RouteError("unknown_model", unknown_model_message(model))
        if price.vendor not in self._backends:
            return RouteError(
                "no_backend",
                f"model {model!r} is served by {price.vendor!r}, and batchd has no "
                f"{price.vendor} backend configured; send these lines to a supported model",
            )
        return Route(price.vendor, model)


class _Open:
    __slots__ = ("chunk", "file", "min_deadline")

    def __init__(self, chunk: Chunk, file: BinaryIO | None) -> None:
        self.chunk = chunk
        self.file = file
        self.min_deadline = chunk.deadline_at


class Estimate(msgspec.Struct, kw_only=True):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_max: int = 0
    cost_usd: float = 0.0
    cost_max_usd: float = 0.0
    baseline_usd: float = 0.0


class Chunker:
    """Streams unique requests into chunk files, rolling over at each backend's limits.

    `open_file(rel_path)` returns a writable binary file, or None for a dry run.
    """

    def __init__(
        self,
        run_id: str,
        settings: Settings,
        prices: PriceBook,
        backends: dict[str, BatchBackend],
        open_file: Callable[[str], BinaryIO | None],
        run_deadline_at: float,
        prompt_cache: bool = True,
    ) -> None:
        self._run_id = run_id
        self._settings = settings
        self._prices = prices
        self._backends = backends
        self._open_file = open_file
        self._deadline = run_deadline_at
        self._prompt_cache = prompt_cache
        self._open: dict[tuple[str, str], _Open] = {}
        self._seq = 0
        self.chunks: list[Chunk] = []
        self.estimates: dict[tuple[str, str], Estimate] = {}
        self._files = ExitStack()
        self._default_out = settings.estimate_output_tokens

    def _limits(self, backend: str) -> tuple[int, int]:
        if backend == "vllm":
            return self._settings.backends.vllm.max_requests_per_chunk, 1 << 62
        o = self._settings.anthropic if backend == "anthropic" else self._settings.openai
        return o.max_lines_per_chunk, o.max_bytes_per_chunk

    def add(
        self, backend: str, model: str, line: bytes, max_tokens: int, deadline_at: float | None
    ) -> None:
        """Append one vendor-format line (newline included) to the open chunk of its model."""
        key = (backend, model)
        cur = self._open.get(key)
        max_lines, max_bytes = self._limits(backend)
        if cur is not None and (
            cur.chunk.n_requests >= max_lines or cur.chunk.n_bytes + len(line) > max_bytes
        ):
            self._close(key)
            cur = None
        if cur is None:
            cur = self._start(Route(backend, model))
            self._open[key] = cur
        if cur.file is not None:
            cur.file.write(line)
        c = cur.chunk
        c.n_requests += 1
        c.n_bytes += len(line)
        if deadline_at is not None and deadline_at < c.deadline_at:
            c.deadline_at = deadline_at
        self._estimate(key, max_tokens, len(line))

    def _start(self, route: Route) -> _Open:
        self._seq += 1
        chunk_id = f"{self._run_id}-c{self._seq:05d}"
        path = f"chunks/{chunk_id}.jsonl"
        chunk = Chunk(
            chunk_id=chunk_id,
            run_id=self._run_id,
            backend=route.backend,
            model=route.model,
            path=path,
            n_requests=0,
            n_bytes=0,
            deadline_at=self._deadline,
            prompt_cache=self._prompt_cache,
        )
        f = self._open_file(path)
        if f is not None:
            self._files.enter_context(f)
        return _Open(chunk, f)

    def _close(self, key: tuple[str, str]) -> None:
        cur = self._open.pop(key)
        if cur.file is not None:
            cur.file.close()
        self.chunks.append(cur.chunk)

    def _estimate(self, key: tuple[str, str], max_tokens: int, n_bytes: int) -> None:
        est = self.estimates.get(key)
        if est is None:
            est = self.estimates[key] = Estimate()
        default_out = self._default_out
        est.requests += 1
        est.input_tokens += n_bytes // BYTES_PER_TOKEN_ESTIMATE
        if max_tokens:
            est.output_tokens += max_tokens if max_tokens < default_out else default_out
            est.output_tokens_max += max_tokens
        else:
            est.output_tokens += default_out
            est.output_tokens_max += default_out

    def _price_estimates(self) -> None:
        for (_, model), est in self.estimates.items():
            price = self._prices.lookup(model)
            if price is None:
                continue
            inp = est.input_tokens
            est.cost_usd = self._prices.cost_usd(
                price, Usage(inp, 0, 0, est.output_tokens), batch=True
            )
            est.cost_max_usd = self._prices.cost_usd(
                price, Usage(inp, 0, 0, est.output_tokens_max), batch=True
            )
            est.baseline_usd = self._prices.baseline_usd(price, Usage(inp, 0, 0, est.output_tokens))

    def finish(self) -> list[Chunk]:
        for key in list(self._open):
            self._close(key)
        self._files.close()
        self._price_estimates()
        for c in self.chunks:
            est = self.estimates.get((c.backend, c.model))
            if est and est.requests:
                c.est_cost_usd = est.cost_usd * c.n_requests / est.requests
        return self.chunks
