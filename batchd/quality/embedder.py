"""The embedding metric's model: `embedding = "local:<dir>"`, a sentence-transformers model
on this machine (e.g. all-MiniLM-L6-v2), loaded once per process, offline."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

from batchd.errors import BatchdError
from batchd.quality.metrics import Embed


def load_embedder(target: str) -> Embed:
    """An embed(texts) -> float32 (n, d) L2-normalized for an `embedding` setting."""
    scheme, _, path = target.partition(":")
    if scheme != "local" or not path:
        raise BatchdError(
            f"Embedding target {target!r} is not usable.",
            'Set embedding = "local:<sentence-transformers model dir>" in the alias\'s [quality].',
        )
    return _local(path)


@lru_cache(maxsize=4)
def _local(path: str) -> Embed:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # an optional dependency
        raise BatchdError(
            "The embedding metric needs sentence-transformers.",
            "pip install sentence-transformers, or pick another metric.",
        ) from exc
    try:
        model = SentenceTransformer(path, device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BatchdError(
            f"Cannot load the embedding model at {path}: {exc}.",
            'Point embedding = "local:<dir>" at a sentence-transformers model directory.',
        ) from exc

    def embed(texts: list[str]) -> npt.NDArray[np.float32]:
        vecs = model.encode(texts, batch_size=64, normalize_embeddings=True)
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)

    return embed
