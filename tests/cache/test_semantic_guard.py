"""The guard's rules, Wilson bounds and learned thresholds; the scope key (no model needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchd.cache.semantic.guard import Guard, learned_threshold, rules_agree, strict_agree, wilson
from batchd.cache.semantic.scope import scope_and_text, semantic_plan
from batchd.config.cache_settings import SemanticSettings
from batchd.config.settings import load_settings


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Refund order 1234", "Refund order 1243"),
        ("What is 15% of 200?", "What is 15% of 300?"),
        ("Which plans include API access?", "Which plans don't include API access?"),
        ("Is the store open on Monday?", "Is the store open on Tuesday?"),
        ("Book it for March 3", "Book it for April 3"),
        ("How long does shipping to Canada take?", "How long does shipping to Mexico take?"),
        ("Translate 'good morning' into French.", "Translate 'good night' into French."),
        ("Give me three examples.", "Give me two examples."),
    ],
)
def test_near_misses_disagree(a: str, b: str) -> None:
    assert not rules_agree(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "What are the steps to reset my password?"),
        ("What is the capital of France?", "Name the capital city of France."),
        ("Refund order 1,234 please", "Please refund order 1234"),
    ],
)
def test_paraphrases_agree(a: str, b: str) -> None:
    assert rules_agree(a, b)


def test_strict_needs_the_same_content_words() -> None:
    assert strict_agree("How do I reset my password?", "how can I reset my passwords")
    assert not strict_agree("How do I reset my password?", "How do I change my password?")


@given(st.text(max_size=300), st.text(max_size=300))
def test_rules_never_raise_and_a_text_agrees_with_itself(a: str, b: str) -> None:
    assert rules_agree(a, a)
    assert rules_agree(a, b) == rules_agree(b, a)


def test_wilson_interval() -> None:
    lo, hi = wilson(0, 133, 1.645)
    assert lo == 0.0 and 0.019 < hi < 0.02
    lo, hi = wilson(5, 100)
    assert lo < 0.05 < hi and round(lo, 3) == 0.022 and round(hi, 3) == 0.112


def test_learned_threshold_is_the_lowest_similarity_within_the_bound() -> None:
    good = [(0.99 - i * 0.001, True) for i in range(200)]  # 0.99 .. 0.791, all right
    t = learned_threshold(good, 0.02, 1.645)
    assert t == pytest.approx(0.791)
    with_wrong = [*good, (0.78, False), (0.77, False)]
    assert learned_threshold(with_wrong, 0.02, 1.645) == pytest.approx(0.791)
    assert learned_threshold(good[:50], 0.02, 1.645) is None  # too few labels to show it


def test_guard_falls_back_to_prior_and_an_entry_veto_holds() -> None:
    s = SemanticSettings(enabled=True)
    g = Guard(s)
    assert g.threshold([], []) == s.prior_threshold
    pooled = [(0.99 - i * 0.001, True) for i in range(200)]
    assert g.threshold(pooled, []) == pytest.approx(0.791)
    assert g.threshold(pooled, [(0.9, False)]) > 0.9  # this entry was wrong at 0.9


def test_scope_key_covers_everything_but_the_text() -> None:
    def scope(text: str, **extra: object) -> bytes:
        b = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
        got = scope_and_text("t", b, "last_user")
        assert got is not None and got[1] == text
        return got[0]

    assert scope("a") == scope("b")
    assert scope("a") != scope("a", temperature=0.5)
    assert scope("a", stream=False) == scope("b")  # what never changes the answer is ignored
    images = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
    assert scope_and_text("t", images, "last_user") is None
    both = {"model": "m", "messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "yo"},
                                       {"role": "user", "content": "more"}]}  # fmt: skip
    assert scope_and_text("t", both, "all")[1] == "user: hi\nassistant: yo\nuser: more"  # type: ignore[index]
    assert scope_and_text("t", both, "last_user")[1] == "more"  # type: ignore[index]


def test_opt_in_per_model_alias_and_run() -> None:
    base = load_settings(environ={})
    assert semantic_plan(base, None) is None  # off by default
    assert semantic_plan(base, True) is not None
    s = load_settings(environ={"BATCHD_CACHE_SEMANTIC_MODELS": "gpt-5.4-nano"})
    plan = semantic_plan(s, None)
    assert plan is not None and plan.applies("gpt-5.4-nano") and not plan.applies("gpt-5.4")
    assert semantic_plan(s, False) is None  # --no-semantic-cache
    assert semantic_plan(load_settings(environ={"BATCHD_CACHE": "0"}), True) is None
