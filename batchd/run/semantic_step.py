"""The semantic cache in a run: its lookups at ingest, its verifications at finalize.

The embedder is chosen here: a local sentence-transformers model (cache.embedders), a
`vllm:<model directory>` pooling model on batchd's vLLM engine layer
(backends.vllm.pooling_embedder: one engine per process and directory, with the worker's settings
for that directory when [backends.vllm] serves it as kind embed), or an `openai:<model>`
endpoint (backends.openai_embedder), whose key is checked before anything is embedded.
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

__all__ = ["SEMANTIC_OPTION", "embedder_for", "semantic_for_run", "verifier_for_run"]


def embedder_for(svc: Services) -> Embedder:
    """The configured embedding target; an endpoint's vectors are kept in the result cache."""
    spec = svc.settings.cache.semantic.embedding
    if spec.startswith(VLLM_PREFIX):
        worker = svc.backends.get("vllm")  # embedded mode: its engines run in this process
        turn = worker.gpu_turn if isinstance(worker, VllmBackend) else None
        return open_vllm_embedder(spec[len(VLLM_PREFIX) :], svc.settings.backends.vllm, turn)
    if not spec.startswith(OPENAI_PREFIX):
        return open_embedder(spec)
    check_embedding(svc.settings)  # nothing is sent without its key
    model = spec[len(OPENAI_PREFIX) :]
    o = svc.settings.openai
    return OpenAIEmbedder(
        model, OPENAI_EMBEDDING_DIMS[model], svc.cache, svc.prices, o.max_retries, o.timeout_s
    )


def semantic_for_run(svc: Services, options: dict[str, Any], salt: str) -> SemanticCache | None:
    """The run's semantic cache; None when no line of it may use one."""
    if options.get("no_cache"):
        return None
    plan = semantic_plan(svc.settings, options.get(SEMANTIC_OPTION))
    if plan is None:
        return None
    s = svc.settings.cache.semantic
    return SemanticCache(s, svc.semantic_store(), svc.cache, plan, embedder_for(svc), salt=salt)


def verifier_for_run(svc: Services, run_stats: dict[str, Any]) -> Verifier | None:
    """Compares sampled and candidate lines' answers at finalize, when ingest found any."""
    if not (run_stats.get("ingest") or {}).get("semantic_checks"):
        return None
    s = svc.settings.cache.semantic
    return Verifier(s, svc.semantic_store(), svc.cache, embedder_for(svc))
