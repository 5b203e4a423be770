"""The semantic cache's `openai:<model>` embedder: texts embedded through the openai SDK.

`embed(texts)` looks each text up in the result cache first, by the request key of the
embeddings request that would produce it (`{"model", "input": text}` in the SEMANTIC_SCOPE
tenant scope, /v1/embeddings), and sends only the texts not found, `BATCH_INPUTS` per
request, to the embeddings API at OPENAI_BASE_URL (or OpenAI's own): synchronous calls at the
list price. Each new vector is stored in the result cache under its key, so a second run
embeds nothing it embedded before; what was bought is counted in `spend`.

With `buy=False` (what a run uses: run.embed_step buys the ingest lookups' vectors and
run.answer_embed_step those of the answers compared at finalize through Batch API jobs)
nothing is sent: a text not in the cache gets a NaN row (the semantic cache then does not
match it, the Verifier leaves its comparison unverified) and is recorded in `missing`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from batchd.cache.base import Cache
from batchd.cache.embedders import Spend
from batchd.config.pricing import PriceBook, Usage
from batchd.errors import BatchdError
from batchd.outcome import SUCCEEDED, Outcome
from batchd.requests import EMBEDDINGS, request_key

SEMANTIC_SCOPE = "batchd:semantic-embedding"  # the tenant scope of the cached vectors
KEY_ENV = "OPENAI_API_KEY"
BATCH_INPUTS = 256  # texts per embeddings request (OpenAI takes up to 2,048)


class OpenAIEmbedder:
    """An OpenAI embeddings model; vectors L2-normalized float32, cached by request key."""

    def __init__(
        self,
        model: str,
        dim: int,
        cache: Cache | None,
        prices: PriceBook,
        max_retries: int = 5,
        timeout_s: float = 600.0,
        buy: bool = True,
    ) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.dim = dim
        self.spend = Spend()
        self._cache = cache
        self._prices = prices
        self._retries = max_retries
        self._timeout_s = timeout_s
        self._client: Any = None
        self.buy = buy
        self.missing: dict[str, None] = {}  # buy=False: the texts the cache lacked, in order

    def request_body(self, text: str) -> dict[str, Any]:
        """The embeddings request of one text (its cache key is `key(text)`)."""
        return {"model": self.model, "input": text}

    def key(self, text: str) -> bytes:
        return request_key(
            SEMANTIC_SCOPE, self.request_body(text), plain=False, endpoint=EMBEDDINGS
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keys = [self.key(t) for t in texts]
        cached = self._cache.get_many(list(set(keys))) if self._cache is not None else {}
        todo: dict[str, list[int]] = {}
        for i, (text, key) in enumerate(zip(texts, keys, strict=True)):
            got = cached.get(key)
            if got is not None and got.embedding is not None and len(got.embedding) == self.dim:
                out[i] = got.embedding
            else:
                todo.setdefault(text, []).append(i)
        pending = list(todo)
        if not self.buy:
            for text in pending:
                out[todo[text]] = np.nan
                self.missing[text] = None
            pending = []
        for start in range(0, len(pending), BATCH_INPUTS):
            part = pending[start : start + BATCH_INPUTS]
            vectors = self._request(part)
            for text, vector in zip(part, vectors, strict=True):
                out[todo[text]] = vector
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def _request(self, texts: list[str]) -> np.ndarray:
        """One embeddings request; its vectors stored in the cache, its cost counted."""
        try:
            response = self._sdk().embeddings.create(model=self.model, input=texts)
        except BatchdError:
            raise
        except Exception as exc:  # the SDK's errors: nothing of the run was sent yet
            status = getattr(exc, "status_code", None)  # not its text: it may echo the key
            raise BatchdError(
                f"The semantic cache's embeddings request to {self.model} failed: "
                f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "") + ".",
                f"Check {KEY_ENV} and OPENAI_BASE_URL, or set cache.semantic.embedding to a "
                "local model; run the same `batchd submit` again.",
            ) from exc
        rows = sorted(response.data, key=lambda d: d.index)
        vectors = np.asarray([d.embedding for d in rows], dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise BatchdError(
                f"{self.model} answered {vectors.shape[0]} vectors of "
                f"{vectors.shape[-1] if vectors.ndim == 2 else 0} numbers for {len(texts)} "
                f"texts; expected {self.dim} numbers each.",
                "Check OPENAI_BASE_URL points at an OpenAI-compatible embeddings endpoint.",
            )
        tokens = int(getattr(response.usage, "total_tokens", 0) or 0)
        price = self._prices.lookup(self.model)
        cost = self._prices.cost_usd(price, Usage(input_tokens=tokens), batch=False) if price else 0
        self.spend.texts += len(texts)
        self.spend.calls += 1
        self.spend.tokens += tokens
        self.spend.cost_usd += cost
        if self._cache is not None:  # each text's share of the request's tokens and cost
            n = len(texts)
            self._cache.put_many(
                (
                    self.key(text),
                    Outcome(
                        status=SUCCEEDED,
                        model_used=self.model,
                        backend="openai",
                        embedding=vector.tolist(),
                        input_tokens=tokens // n,
                        cost_usd=cost / n,
                        tier="realtime",
                    ),
                )
                for text, vector in zip(texts, vectors, strict=True)
            )
        return vectors

    def _sdk(self) -> Any:
        if self._client is None:
            key = os.environ.get(KEY_ENV, "").strip()
            if not key:
                raise BatchdError(
                    f"{KEY_ENV} is not set, so the semantic cache cannot embed with {self.model}.",
                    f"Export the key (export {KEY_ENV}=...) and submit again; nothing was sent.",
                )
            from openai import OpenAI

            self._client = OpenAI(  # base_url None: OPENAI_BASE_URL or OpenAI's own
                api_key=key, max_retries=self._retries, timeout=self._timeout_s
            )
        return self._client
