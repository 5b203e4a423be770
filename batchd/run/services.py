"""The per-process context: settings, store, cache, price book, backends, blobs."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from batchd.backends.anthropic_batch import AnthropicBatchBackend
from batchd.backends.base import BatchBackend
from batchd.backends.gemini_batch import GeminiBatchBackend
from batchd.backends.openai_batch import OpenAIBatchBackend
from batchd.backends.vllm.backend import GpuQueue, VllmBackend, window_gate
from batchd.cache.base import Cache
from batchd.cache.semantic.entries import SemanticStore
from batchd.cache.sqlite_cache import SqliteCache
from batchd.config.pricing import PriceBook, load_price_book
from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.planning.routing import Router
from batchd.state.base import Store
from batchd.state.sqlite_store import SqliteStore
from batchd.storage.blobs import LocalBlobs, S3Blobs, blobs_at
from batchd.storage.private import make_dirs, parse_mode
from batchd.storage.s3 import S3, join, s3_for


@dataclass
class Services:
    settings: Settings
    store: Store
    cache: Cache
    prices: PriceBook
    backends: dict[str, BatchBackend]
    router: Router = field(init=False)
    _semantic: SemanticStore | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.router = Router(self.prices, self.backends, self.settings)
        vllm = self.backends.get("vllm")
        if isinstance(vllm, VllmBackend):
            vllm.bind(self.blobs)

    @property
    def home(self) -> Path:
        return self.settings.home_path

    @property
    def distributed(self) -> bool:
        return bool(self.settings.redis_url)

    @property
    def s3(self) -> S3:
        """The process's S3 client (made on first use; embedded runs without S3 never need it)."""
        return s3_for(self.settings.s3)

    def blobs(self, run_id: str) -> LocalBlobs | S3Blobs:
        """The run's bulk data: under BATCHD_WORKDIR (a directory or s3:// prefix)."""
        root = self.settings.workdir or str(self.home / "work")
        return self.blobs_at(join(root, run_id))

    def blobs_at(self, root: str) -> LocalBlobs | S3Blobs:
        """Blobs under any local directory or s3:// prefix (run outputs, staged inputs)."""
        return blobs_at(root, lambda: self.s3, self.home / "tmp")

    def output(self, run_output: str, run_id: str) -> LocalBlobs | S3Blobs:
        """Where a run's results.parquet, costs.parquet, ... land: <output>/<run_id>/
        (local files created with `results_file_mode`)."""
        mode = parse_mode(self.settings.results_file_mode)
        return blobs_at(join(run_output, run_id), lambda: self.s3, self.home / "tmp", mode)

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()

    def semantic_store(self) -> SemanticStore:
        """The semantic cache's entries and labels, beside the result cache (made on use)."""
        if self._semantic is None:
            ttl_s = self.settings.cache.ttl_s
            if self.settings.redis_url:
                from batchd.cache.semantic.redis_entries import RedisSemanticStore

                self._semantic = RedisSemanticStore(self.settings.redis_url, ttl_s)
            else:
                from batchd.cache.semantic.sqlite_entries import SqliteSemanticStore

                self._semantic = SqliteSemanticStore(self.home / "cache.db", ttl_s)
        return self._semantic

    def close(self) -> None:
        self.store.close()
        self.cache.close()
        if self._semantic is not None:
            self._semantic.close()


def open_services(settings: Settings) -> Services:
    """The process's services; BatchdError (one line) when the home or Redis cannot be used."""
    prices = load_price_book(settings)
    backends: dict[str, BatchBackend] = {
        "openai": OpenAIBatchBackend(settings.openai),
        "anthropic": AnthropicBatchBackend(settings.anthropic, prices),
        "gemini": GeminiBatchBackend(settings.gemini),
    }
    if settings.backends.vllm.enabled:
        backends["vllm"] = _vllm_backend(settings)
    for name, p in settings.providers.items():  # other OpenAI-compatible Batch APIs
        backends[name] = OpenAIBatchBackend.provider(
            settings.openai, name, p.base_url, p.api_key_env
        )
    store, cache = _state(settings)
    vllm = backends.get("vllm")
    if isinstance(vllm, VllmBackend) and settings.redis_url:
        from batchd.state.redis_store import RedisStore

        if isinstance(store, RedisStore):
            redis_store = store
            vllm.busy = lambda chunk_id: redis_store.lease_taken(f"gpu:{chunk_id}")
    return Services(settings=settings, store=store, cache=cache, prices=prices, backends=backends)


def _state(settings: Settings) -> tuple[Store, Cache]:
    if settings.redis_url:  # distributed mode: state and cache in Redis, bulk data on workdir
        from batchd.cache.redis_cache import RedisCache
        from batchd.state.redis_store import RedisStore

        redis_store = RedisStore(settings.redis_url)
        redis_store.ping()
        return redis_store, RedisCache(settings.redis_url, ttl_s=settings.cache.ttl_s)
    home = settings.home_path
    try:
        make_dirs(home)  # 0700: state, cache, work files and locks live here
        store = SqliteStore(home / "state.db")
        try:
            return store, SqliteCache(home / "cache.db", ttl_s=settings.cache.ttl_s)
        except BaseException:
            store.close()
            raise
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BatchdError(
            f"Cannot use BATCHD_HOME {home}: {reason}.",
            "Set BATCHD_HOME to a writable directory with free space (it holds run state "
            "and the cache).",
        ) from exc


def _vllm_backend(settings: Settings) -> VllmBackend:
    """Embedded mode: the engine runs in this process. Distributed: jobs on the gpu queue."""
    cfg = settings.backends.vllm
    if settings.redis_url:
        return VllmBackend(cfg, queue=GpuQueue(settings.redis_url))
    from batchd.backends.vllm.runner import GpuRunner

    return VllmBackend(cfg, runner=GpuRunner(cfg, admitting=window_gate(cfg)))
