"""The semantic cache's fast paths on real all-MiniLM-L6-v2 embeddings, SQLite and Redis:
entries stored without a vector (their scope had none) and embedded on first need, the
usearch graph agreeing with the exact matrix product, and each distinct text embedded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchd.cache.embedders import Spend
from batchd.cache.semantic import vector_index
from batchd.cache.semantic.matcher import HIT, store_scope
from batchd.cache.semantic.vector_index import ScopeIndex
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import SUCCEEDED, Outcome
from tests.cache.semantic_support import MODEL, Stores, body, minilm, query

LOOSE = SemanticSettings(enabled=True, prior_threshold=0.8, verify_share=0.0)
FAQ = [
    ("How do I reset my password?", "Open Settings > Security and choose Reset password."),
    ("Which plans include free shipping?", "The Plus and Pro plans include free shipping."),
    ("How long does shipping to Canada take?", "Shipping to Canada takes 5-7 business days."),
]


class Counting:
    """MiniLM, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        self.model = minilm()
        self.name, self.dim = self.model.name, self.model.dim
        self.spend = Spend()
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return self.model.embed(texts)


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    return Stores(request.param, tmp_path, url)


def test_empty_scope_embeds_nothing_and_its_entries_are_embedded_when_needed(
    stores: Stores,
) -> None:
    from batchd.cache.semantic.matcher import SemanticCache
    from tests.cache.semantic_support import PLAN

    first = Counting()
    sc = SemanticCache(LOOSE, stores.entries, stores.results, PLAN, first, "run1")
    qs = [query("acme", body(q)) for q, _ in FAQ]
    matches, vectors = sc.lookup(qs)
    assert matches == {} and first.texts == []  # nothing cached in the scope: no embedding
    assert np.isnan(vectors).all()
    sc.remember(qs, vectors)
    stores.results.put_many(
        (q.key, Outcome(status=SUCCEEDED, output_text=a, model_used=MODEL))
        for q, (_, a) in zip(qs, FAQ, strict=True)
    )
    scope = store_scope(qs[0].scope, first.name)
    assert stores.entries.load(scope, 10, first.dim).missing.all()

    later = Counting()
    sc2 = SemanticCache(LOOSE, stores.entries, stores.results, PLAN, later, "run2")
    q = query("acme", body("What are the steps to reset my password?"))
    got = sc2.lookup([q])[0][q.key]
    assert got.kind == HIT and got.source_key == qs[0].key
    assert sorted(later.texts) == sorted([t for t, _ in FAQ] + [q.text])
    rows = stores.entries.load(scope, 10, later.dim)  # the vectors were stored
    assert not rows.missing.any()
    assert np.allclose(np.linalg.norm(rows.vectors, axis=1), 1.0, atol=1e-4)

    third = Counting()
    sc3 = SemanticCache(LOOSE, stores.entries, stores.results, PLAN, third, "run3")
    sc3.lookup([q, q])
    assert third.texts == [q.text]  # entries embedded already; the repeated text once


def test_graph_search_agrees_with_exact_search() -> None:
    texts = [f"{q} ({n})" for n in range(40) for q, _ in FAQ] + [t for t, _ in FAQ]
    vectors = minilm().embed(texts)
    from batchd.cache.semantic.entries import ScopeRows

    rows = ScopeRows(
        [i.to_bytes(16, "big") for i in range(len(texts))],
        texts,
        vectors,
        np.zeros(len(texts), dtype=bool),
    )
    graph, exact = ScopeIndex(rows, brute_max=0), ScopeIndex(rows, brute_max=10**6)
    assert graph.index is not None and exact.index is None
    probes = minilm().embed(["What are the steps to reset my password?", "Shipping to Canada?"])
    (gp, gs), (ep, es) = graph.search(probes, 4), exact.search(probes, 4)
    assert gp[:, 0].tolist() == ep[:, 0].tolist()
    assert np.allclose(gs[:, 0], es[:, 0], atol=2e-3)  # float16 in the graph
    assert (es[:, :-1] >= es[:, 1:]).all()  # best first


def test_lookup_through_the_graph_finds_the_paraphrase(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_index, "BRUTE_MAX", 0)
    items = [(query("acme", body(q)), a) for q, a in FAQ]
    stores.fill(LOOSE, items)
    q = query("acme", body("What are the steps to reset my password?"))
    m = stores.cache(LOOSE).lookup([q])[0][q.key]
    assert m.kind == HIT and m.source_key == items[0][0].key
