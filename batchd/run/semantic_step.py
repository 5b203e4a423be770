"""The semantic cache in a run: its lookups at ingest, its verifications at finalize."""

from __future__ import annotations

from typing import Any

from batchd.cache.embedders import open_embedder
from batchd.cache.semantic.answer_check import Verifier
from batchd.cache.semantic.matcher import SemanticCache
from batchd.cache.semantic.scope import semantic_plan
from batchd.run.services import Services

SEMANTIC_OPTION = "semantic_cache"  # run option: True (--semantic-cache), False, None


def semantic_for_run(svc: Services, options: dict[str, Any], salt: str) -> SemanticCache | None:
    """The run's semantic cache; None when no line of it may use one."""
    if options.get("no_cache"):
        return None
    plan = semantic_plan(svc.settings, options.get(SEMANTIC_OPTION))
    if plan is None:
        return None
    s = svc.settings.cache.semantic
    return SemanticCache(s, svc.semantic_store(), svc.cache, plan, salt=salt)


def verifier_for_run(svc: Services, run_stats: dict[str, Any]) -> Verifier | None:
    """Compares sampled and candidate lines' answers at finalize, when ingest found any."""
    if not (run_stats.get("ingest") or {}).get("semantic_checks"):
        return None
    s = svc.settings.cache.semantic
    return Verifier(s, svc.semantic_store(), svc.cache, open_embedder(s.embedding))
