"""The per-process context: settings, store, cache, price book, backends, blobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from batchd.backends.anthropic_batch import AnthropicBatchBackend
from batchd.backends.base import BatchBackend
from batchd.backends.openai_batch import OpenAIBatchBackend
from batchd.blobs import LocalBlobs
from batchd.cache import Cache, SqliteCache
from batchd.plan import Router
from batchd.pricing import PriceBook, load_price_book
from batchd.settings import Settings
from batchd.store import SqliteStore, Store


@dataclass
class Services:
    settings: Settings
    store: Store
    cache: Cache
    prices: PriceBook
    backends: dict[str, BatchBackend]
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        self.router = Router(self.prices, self.backends, self.settings)

    @property
    def home(self) -> Path:
        return self.settings.home_path

    @property
    def distributed(self) -> bool:
        return bool(self.settings.redis_url)

    def blobs(self, run_id: str) -> LocalBlobs:
        root = Path(self.settings.workdir) if self.settings.workdir else self.home / "work"
        return LocalBlobs(root / run_id)

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()

    def close(self) -> None:
        self.store.close()
        self.cache.close()


def open_services(settings: Settings) -> Services:
    home = settings.home_path
    home.mkdir(parents=True, exist_ok=True)
    prices = load_price_book(settings)
    backends: dict[str, BatchBackend] = {
        "openai": OpenAIBatchBackend(settings.openai),
        "anthropic": AnthropicBatchBackend(settings.anthropic, prices),
    }
    for name, p in settings.providers.items():  # other OpenAI-compatible Batch APIs
        backends[name] = OpenAIBatchBackend.provider(
            settings.openai, name, p.base_url, p.api_key_env
        )
    store: Store
    cache: Cache
    if settings.redis_url:  # distributed mode: state and cache in Redis, bulk data on workdir
        from batchd.redis_cache import RedisCache
        from batchd.redis_store import RedisStore

        store = RedisStore(settings.redis_url)
        cache = RedisCache(settings.redis_url, ttl_s=settings.cache_ttl_s)
    else:
        store = SqliteStore(home / "state.db")
        cache = SqliteCache(home / "cache.db", ttl_s=settings.cache_ttl_s)
    return Services(settings=settings, store=store, cache=cache, prices=prices, backends=backends)
