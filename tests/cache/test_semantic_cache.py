"""The semantic cache on real all-MiniLM-L6-v2 embeddings, SQLite and Redis alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.cache.semantic.answer_check import AGREED, DISAGREED, Verifier
from batchd.cache.semantic.matcher import CANDIDATE, HIT, VERIFY
from batchd.config.cache_settings import SemanticSettings
from batchd.outcome import SUCCEEDED
from tests.cache.semantic_support import Stores, body, minilm, query

# A scope with no labels falls back to prior_threshold: set low here, so the rules decide.
LOOSE = SemanticSettings(enabled=True, prior_threshold=0.8, verify_share=0.0)

FAQ = [
    ("How do I reset my password?", "Open Settings > Security and choose Reset password."),
    ("What is the refund policy for order 1234?", "Order 1234 can be refunded within 30 days."),
    ("Which plans include free shipping?", "The Plus and Pro plans include free shipping."),
    ("What were total sales in March 2025?", "Sales in March 2025 were $1.2M."),
    ("How long does shipping to Canada take?", "Shipping to Canada takes 5-7 business days."),
]


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    return Stores(request.param, tmp_path, url)


def _filled(stores: Stores, tenant: str = "acme", settings: SemanticSettings = LOOSE) -> list:
    items = [(query(tenant, body(q)), a) for q, a in FAQ]
    stores.fill(settings, items)
    return items


def test_paraphrase_is_answered_from_the_cache(stores: Stores) -> None:
    items = _filled(stores)
    sc = stores.cache(LOOSE)
    q = query("acme", body("What are the steps to reset my password?"))
    matches, vectors = sc.lookup([q])
    m = matches[q.key]
    assert m.kind == HIT and m.source_key == items[0][0].key
    assert 0.9 < m.similarity < 1.0
    assert m.outcome is not None and m.outcome.output_text == FAQ[0][1]
    assert vectors.shape == (1, 384)


@pytest.mark.parametrize(
    ("near_miss", "source"),
    [
        ("What is the refund policy for order 1243?", 1),  # one number
        ("Which plans do not include free shipping?", 2),  # negation
        ("What were total sales in April 2025?", 3),  # date
        ("How long does shipping to Mexico take?", 4),  # entity
    ],
)
def test_near_miss_is_never_served(stores: Stores, near_miss: str, source: int) -> None:
    _filled(stores)
    q = query("acme", body(near_miss))
    matches, _ = stores.cache(LOOSE).lookup([q])
    # Not served, and not even a candidate for learning: the rules tell these apart, and
    # labels would only teach the threshold what the rules already know.
    assert q.key not in matches


def test_near_miss_similarity_is_above_what_a_fixed_threshold_would_allow() -> None:
    """Why the rules exist: MiniLM puts these near-misses above most paraphrases."""
    e = minilm()
    near = e.embed(
        ["Which plans include free shipping?", "Which plans do not include free shipping?"]
    )
    para = e.embed(
        ["How long does shipping to Canada take?", "How many days does delivery to Canada take?"]
    )
    assert float(near[0] @ near[1]) > float(para[0] @ para[1])


def test_a_tenant_never_gets_another_tenants_answer(stores: Stores) -> None:
    _filled(stores, tenant="acme")
    wide_open = SemanticSettings(enabled=True, prior_threshold=0.0, min_similarity=0.0)
    same_text = query("globex", body(FAQ[0][0]))
    paraphrase = query("globex", body("What are the steps to reset my password?"))
    matches, _ = stores.cache(wide_open).lookup([same_text, paraphrase])
    assert matches == {}
    # ... while the owner's own paraphrase is found, through new connections (other process)
    stores.results, stores.entries = stores.reopen()
    own = query("acme", body("What are the steps to reset my password?"))
    assert stores.cache(wide_open).lookup([own])[0][own.key].kind == HIT


@pytest.mark.parametrize(
    "other",
    [
        body("What are the steps to reset my password?", system="Answer in German."),
        body("What are the steps to reset my password?", temperature=0.9),
        body("What are the steps to reset my password?", model="gpt-5.4-mini"),
        body("What are the steps to reset my password?", tools=[{"type": "function"}]),
    ],
    ids=["system_prompt", "sampling", "model", "tools"],
)
def test_scope_differs_in_anything_but_the_text_no_match(stores: Stores, other: dict) -> None:
    _filled(stores)
    q = query("acme", other)
    assert stores.cache(LOOSE).lookup([q])[0] == {}


def test_cold_scope_sends_paraphrases_and_learns_from_their_answers(stores: Stores) -> None:
    """Default guard: no labels yet, so a paraphrase (similarity < prior) is only a candidate;
    its fresh answer, compared at finalize, becomes a label; with enough labels the scope's
    threshold drops under the paraphrase and the next one is served."""
    strict = SemanticSettings(enabled=True, max_error_rate=0.3, verify_share=0.0)
    items = _filled(stores, settings=strict)
    paraphrases = [
        "I forgot my password, how do I reset it?",
        "Can I get a refund for order 1234?",
        "Do any plans come with free shipping?",
        "How much did we sell in March 2025?",
        "What is the delivery time for shipping to Canada?",
        "Tell me how to reset my password.",
        "Explain the refund policy for order 1234.",
        "Which subscription plans have free shipping?",
        "Tell me total sales for March 2025.",
        "How many days does shipping to Canada take?",
    ]
    qs = [query("acme", body(p)) for p in paraphrases]
    sc = stores.cache(strict)
    matches, _ = sc.lookup(qs)
    cold = [matches.get(q.key) for q in qs]
    below_prior = [m for m in cold if m is not None and m.similarity < strict.prior_threshold]
    assert all(m.kind == CANDIDATE for m in below_prior), cold
    candidates = [(q, m) for q, m in zip(qs, cold, strict=True) if m and m.kind == CANDIDATE]
    assert len(candidates) >= 7  # 7 agreeing labels bound the error under 0.3 (z = 1.645)
    # finalize: each candidate's own answer (the model answers the same question alike)
    answer_of = {key.key: a for key, a in items}
    v = Verifier(strict, stores.entries, stores.results, minilm())
    v.verdicts(
        [m.kind for _, m in candidates],
        [m.source_key for _, m in candidates],
        [m.similarity for _, m in candidates],
        [m.scope for _, m in candidates],
        [SUCCEEDED] * len(candidates),
        [answer_of[m.source_key] for _, m in candidates],
    )
    assert v.labels == len(candidates) and v.verified == 0  # candidates are not samples
    stores.results, stores.entries = stores.reopen()  # the labels persisted
    later = query("acme", body("What are the steps to reset my password?"))
    m = stores.cache(strict).lookup([later])[0][later.key]
    assert m.kind == HIT and m.similarity < strict.prior_threshold


def test_a_wrong_verification_stops_that_entry_at_that_similarity(stores: Stores) -> None:
    items = _filled(stores)
    sampled = SemanticSettings(enabled=True, prior_threshold=0.8, verify_share=1.0)
    q = query("acme", body("What are the steps to reset my password?"))
    m = stores.cache(sampled).lookup([q])[0][q.key]
    assert m.kind == VERIFY  # would be served; sampled, so it is sent and compared
    v = Verifier(sampled, stores.entries, stores.results, minilm())
    verdict = v.verdicts(
        [m.kind],
        [m.source_key],
        [m.similarity],
        [m.scope],
        [SUCCEEDED],
        ["Passwords cannot be reset; contact support at 555-0100."],  # the model disagrees
    )
    assert verdict == [DISAGREED] and (v.verified, v.false_hits) == (1, 1)
    again = stores.cache(LOOSE).lookup([q])[0]
    assert q.key not in again or again[q.key].kind != HIT
    same = v.verdicts([VERIFY], [items[1][0].key], [0.95], [m.scope], [SUCCEEDED], [FAQ[1][1]])
    assert same == [AGREED]


def test_answers_of_expired_entries_are_not_served(stores: Stores) -> None:
    q0 = query("acme", body(FAQ[0][0]))
    sc = stores.cache(LOOSE)
    sc.remember([q0], minilm().embed([q0.text]))  # sent, but its answer never came back
    q = query("acme", body("What are the steps to reset my password?"))
    assert stores.cache(LOOSE).lookup([q])[0] == {}
