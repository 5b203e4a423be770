"""Texts an embedder has no vector for (an endpoint embedder that only reads the result cache,
when the run's embedding batch failed for them), on real all-MiniLM-L6-v2 embeddings: such a
query is never matched and is remembered without a vector; such an entry stays unmatched and
is not given one; a read-only cache (the embedding pre-pass) writes nothing; an answer
compared at finalize with no vector leaves its comparison unverified (no label, no verdict
made up), and the answers a comparison embeds are known before finalize."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from batchd.cache.embedders import Embedder, Spend
from batchd.cache.semantic.answer_check import (
    AGREED,
    UNVERIFIED,
    Verifier,
    pairs,
    texts_to_embed,
)
from batchd.cache.semantic.matcher import HIT, VERIFY, SemanticCache, store_scope
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import SUCCEEDED, Outcome
from tests.cache.semantic_support import PLAN, Stores, body, minilm, query

LOOSE = SemanticSettings(enabled=True, prior_threshold=0.8, verify_share=0.0)
PASSWORD = "How do I reset my password?"
REFUND = "What is the refund policy for order 1234?"
PARAPHRASE = "What are the steps to reset my password?"
ANSWER = Outcome(status=SUCCEEDED, output_text="an answer", model_used="gpt-5.4-nano")


class Lacking:
    """MiniLM, except for `lacking` texts: NaN rows, as OpenAIEmbedder(buy=False) answers."""

    def __init__(self, lacking: set[str]) -> None:
        self.inner: Embedder = minilm()
        self.name, self.dim, self.spend = self.inner.name, self.inner.dim, Spend()
        self.lacking = lacking
        self.asked: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.asked += texts
        out = self.inner.embed(texts).copy()
        out[[i for i, t in enumerate(texts) if t in self.lacking]] = np.nan
        return out


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    return Stores(request.param, tmp_path, url)


def _cache(stores: Stores, embedder: Lacking, read_only: bool = False) -> SemanticCache:
    return SemanticCache(
        LOOSE, stores.entries, stores.results, PLAN, embedder, "run", read_only=read_only
    )


def _missing(stores: Stores, text: str) -> dict[str, bool]:
    q = query("acme", body(text))
    rows = stores.entries.load(store_scope(q.scope, minilm().name), 100, minilm().dim)
    return dict(zip(rows.texts, rows.missing.tolist(), strict=True))


def test_a_query_without_a_vector_is_not_matched_and_kept_without_one(stores: Stores) -> None:
    stores.fill(LOOSE, [(query("acme", body(PASSWORD)), "Settings > Security.")])
    q = query("acme", body(PARAPHRASE))
    assert _cache(stores, Lacking(set())).lookup([q])[0][q.key].kind == HIT  # with a vector
    sc = _cache(stores, Lacking({PARAPHRASE}))
    matches, vectors = sc.lookup([q])
    assert matches == {} and np.isnan(vectors).all()
    sc.remember([q], vectors)
    assert _missing(stores, PARAPHRASE) == {PASSWORD: False, PARAPHRASE: True}


def test_an_entry_without_a_vector_stays_unmatched_and_is_not_given_one(stores: Stores) -> None:
    stored = [query("acme", body(t)) for t in (PASSWORD, REFUND)]
    _cache(stores, Lacking(set())).remember(stored, np.full((2, 384), np.nan, np.float32))
    stores.results.put_many((q.key, ANSWER) for q in stored)
    sc = _cache(stores, Lacking({PASSWORD}))
    q = query("acme", body(PARAPHRASE))
    assert sc.lookup([q])[0] == {}  # its only near entry has no vector
    assert _missing(stores, PASSWORD) == {PASSWORD: True, REFUND: False}
    later = _cache(stores, Lacking(set()))  # a later run that has its vector
    assert later.lookup([q])[0][q.key].source_key == stored[0].key
    assert _missing(stores, PASSWORD) == {PASSWORD: False, REFUND: False}


def test_a_read_only_cache_writes_nothing_and_asks_for_what_a_lookup_needs(
    stores: Stores,
) -> None:
    stored = query("acme", body(PASSWORD))
    _cache(stores, Lacking(set())).remember([stored], np.full((1, 384), np.nan, np.float32))
    embedder = Lacking({PASSWORD, PARAPHRASE})
    sc = _cache(stores, embedder, read_only=True)
    q, cold = query("acme", body(PARAPHRASE)), query("acme", body("hi", max_tokens=9))
    matches, vectors = sc.lookup([q, cold])
    sc.remember([q, cold], vectors)
    assert matches == {} and sorted(embedder.asked) == [PASSWORD, PARAPHRASE]  # not `cold`
    assert _missing(stores, PASSWORD) == {PASSWORD: True}  # no vector set, no entry added


def test_an_answer_without_a_vector_leaves_its_comparison_unverified(stores: Stores) -> None:
    cached = "Open Settings, then Security, and choose Reset password."
    stores.fill(LOOSE, [(query("acme", body(PASSWORD)), cached)])
    sampled = msgspec.structs.replace(LOOSE, verify_share=1.0)
    q = query("acme", body(PARAPHRASE))
    m = stores.cache(sampled).lookup([q])[0][q.key]
    assert m.kind == VERIFY
    reworded = "In Settings, open Security and pick Reset password."  # needs the embeddings
    same = "open settings then security and choose reset password"  # the same text
    rows = ([VERIFY] * 2, [m.source_key] * 2, [SUCCEEDED] * 2, [reworded, same])
    compared = pairs(stores.results, *rows)
    assert texts_to_embed(compared) == [reworded, cached]  # only the pair that differs
    embedder = Lacking({reworded})
    v = Verifier(sampled, stores.entries, stores.results, embedder)
    args = (rows[0], rows[1], [m.similarity] * 2, [m.scope] * 2, rows[2], rows[3])
    assert v.verdicts(*args) == [UNVERIFIED, AGREED]
    assert (v.verified, v.false_hits, v.unverified, v.labels) == (1, 0, 1, 1)
    assert embedder.asked == [reworded, cached]  # one call for the batch of rows
    assert [lb.ok for lb in stores.entries.labels(m.scope)] == [True]  # no label made up
    decided = Verifier(sampled, stores.entries, stores.results, Lacking(set()))
    assert decided.verdicts(*args)[0] in ("agreed", "disagreed") and decided.unverified == 0
