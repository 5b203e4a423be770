"""The semantic cache in a run: its lookups at ingest, its verifications at finalize.

The embedder is chosen here: a local sentence-transformers model (cache.embedders), a
`vllm:<model directory>` pooling model on batchd's vLLM engine layer
(backends.vllm.pooling_embedder: one engine per process and directory, with the worker's settings
for that directory when [backends.vllm] serves it as kind embed), or an `openai:<model>`
endpoint (backends.openai_embedder), whose key is checked before anything is embedded. An
endpoint's vectors for the ingest lookups are bought by the run's embedding step
(run.embed_step, a Batch API job), those of the answers compared at finalize by
run.answer_embed_step; the lookups and the Verifier only read them from the cache.
"""

from __future__ import annotations

from typing import Any

from batchd.backends.openai_embedder import OpenAIEmbedder
from batchd.backends.vllm.backend import VllmBackend
from batchd.backends.vllm.pooling_embedder import open_vllm_embedder
from batchd.cache.embedders import Embedder, open_embedder
from batchd.cache.semantic.answer_check import Verifier
from batchd.cache.semantic.matcher import SemanticCache
from batchd.cache.semantic.scope import semantic_plan
from batchd.config.cache_settings import OPENAI_EMBEDDING_DIMS, OPENAI_PREFIX, VLLM_PREFIX
from batchd.run.preflight import SEMANTIC_OPTION, check_embedding
from batchd.run.services import Services

__all__ = [
    "SEMANTIC_OPTION",
    "embedder_for",
    "endpoint_embedder",
    "semantic_for_run",
    "uses_endpoint",
    "verifier_for_run",
]


def embedder_for(svc: Services, buy: bool = True) -> Embedder:
    """The configured embedding target; an endpoint's vectors are kept in the result cache
    (`buy=False`: an endpoint embedder that only reads them from there)."""
    spec = svc.settings.cache.semantic.embedding
    if spec.startswith(VLLM_PREFIX):
        worker = svc.backends.get("vllm")  # embedded mode: its engines run in this process
        turn = worker.gpu_turn if isinstance(worker, VllmBackend) else None
        return open_vllm_embedder(spec[len(VLLM_PREFIX) :], svc.settings.backends.vllm, turn)
    if not spec.startswith(OPENAI_PREFIX):
        return open_embedder(spec)
    check_embedding(svc.settings)  # nothing is sent without its key
    return endpoint_embedder(svc, buy)


def endpoint_embedder(svc: Services, buy: bool) -> OpenAIEmbedder:
    """The `openai:<model>` embedder of cache.semantic.embedding (no key check here)."""
    model = svc.settings.cache.semantic.embedding[len(OPENAI_PREFIX) :]
    o = svc.settings.openai
    return OpenAIEmbedder(
        model,
        OPENAI_EMBEDDING_DIMS[model],
        svc.cache,
        svc.prices,
        o.max_retries,
        o.timeout_s,
        buy=buy,
    )


def semantic_for_run(
    svc: Services,
    options: dict[str, Any],
    salt: str,
    embedder: Embedder | None = None,
    read_only: bool = False,
) -> SemanticCache | None:
    """The run's semantic cache; None when no line of it may use one. Its lookups never buy
    an endpoint's vectors (run.embed_step did, as a batch); `read_only`: a pre-pass."""
    if options.get("no_cache"):
        return None
    plan = semantic_plan(svc.settings, options.get(SEMANTIC_OPTION))
    if plan is None:
        return None
    s = svc.settings.cache.semantic
    embedder = embedder or embedder_for(svc, buy=False)
    return SemanticCache(
        s, svc.semantic_store(), svc.cache, plan, embedder, salt=salt, read_only=read_only
    )


def uses_endpoint(svc: Services, options: dict[str, Any]) -> bool:
    """The run may use the semantic cache, with an `openai:<model>` embedding target."""
    if options.get("no_cache") or semantic_plan(svc.settings, options.get(SEMANTIC_OPTION)) is None:
        return False
    return svc.settings.cache.semantic.embedding.startswith(OPENAI_PREFIX)


def verifier_for_run(svc: Services, run_stats: dict[str, Any]) -> Verifier | None:
    """Compares sampled and candidate lines' answers at finalize, when ingest found any. An
    endpoint's vectors are only read from the cache (run.answer_embed_step bought them)."""
    if not (run_stats.get("ingest") or {}).get("semantic_checks"):
        return None
    s = svc.settings.cache.semantic
    return Verifier(s, svc.semantic_store(), svc.cache, embedder_for(svc, buy=False))
