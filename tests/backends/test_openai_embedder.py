"""The semantic cache's `openai:<model>` embedding target, against the OpenAI emulator through
the real openai SDK. The emulator's vectors carry no meaning, so these are plumbing tests:
the vectors come from the endpoint, each text's vector is kept in the result cache (a second
run embeds nothing it embedded before), what was bought is counted, and a missing key is
refused before anything is sent. Tests about meaning stay on MiniLM (tests/cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchd.backends.openai_embedder import OpenAIEmbedder
from batchd.cache.sqlite_cache import SqliteCache
from batchd.config.cache_settings import SemanticSettings, semantic_problems
from batchd.config.pricing import PER_MTOK, load_price_book
from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.run.preflight import check_embedding
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.emulators.openai_endpoints import vector
from tests.support.helpers import API_KEY

MODEL = "text-embedding-3-small"


@pytest.fixture
def endpoint(emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)


def _embedding_calls(emu: OpenAIBatchEmulator) -> list[list[str]]:
    return [c["body"]["input"] for c in emu.sync_calls if c.get("url") == "/v1/embeddings"]


def _embedder(tmp_path: Path) -> OpenAIEmbedder:
    prices = load_price_book(Settings())
    return OpenAIEmbedder(MODEL, 1536, SqliteCache(tmp_path / "cache.db"), prices, max_retries=0)


def test_vectors_come_from_the_endpoint_and_a_second_run_embeds_nothing(
    endpoint: None, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    texts = ["How do I reset my password?", "Where is my invoice?", "How do I reset my password?"]
    first = _embedder(tmp_path)
    got = first.embed(texts)
    assert _embedding_calls(emulator) == [texts[:2]]  # one request, each distinct text once
    assert got.shape == (3, 1536) and got.dtype == np.float32
    for row, text in zip(got, texts, strict=True):
        np.testing.assert_allclose(row, vector(MODEL, text, 1536), atol=1e-6)
    assert first.spend.texts == 2 and first.spend.calls == 1 and first.spend.tokens > 0
    price = load_price_book(Settings()).require(MODEL)
    expected_usd = first.spend.tokens * price.input_per_mtok / PER_MTOK
    assert first.spend.cost_usd == pytest.approx(expected_usd)
    assert first.spend.cost_usd > 0

    second = _embedder(tmp_path)  # a later run: new embedder, the same result cache
    again = second.embed([texts[1], texts[0], "A new question"])
    assert _embedding_calls(emulator) == [texts[:2], ["A new question"]]  # only the new text
    np.testing.assert_array_equal(again[:2], got[[1, 0]])
    assert second.spend.texts == 1 and second.spend.calls == 1


def test_many_texts_go_in_batches(
    endpoint: None, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    texts = [f"question number {i}" for i in range(300)]
    got = _embedder(tmp_path).embed(texts)
    assert [len(c) for c in _embedding_calls(emulator)] == [256, 44]
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_missing_key_is_refused_before_anything_is_sent(
    emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    settings = Settings()
    settings.cache.semantic.embedding = f"openai:{MODEL}"
    with pytest.raises(BatchdError) as err:
        check_embedding(settings)
    assert "OPENAI_API_KEY" in err.value.message
    with pytest.raises(BatchdError, match="OPENAI_API_KEY"):
        _embedder(tmp_path).embed(["anything"])
    assert emulator.sync_calls == []
    settings.cache.semantic.embedding = "local:/models/minilm"
    check_embedding(settings)  # a local model needs no key


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("hf:/models/e5", "vllm:<path to a model directory vLLM can run as a pooling"),
        ("openai:gpt-5.4-nano", "'gpt-5.4-nano' is not an OpenAI embedding model"),
        ("local:", "is not understood"),
    ],
)
def test_the_setting_is_checked(spec: str, says: str) -> None:
    (problem,) = semantic_problems(SemanticSettings(embedding=spec))
    assert says in problem
    assert "cache.semantic.embedding" in problem
    assert "text-embedding-3-small" in problem


def test_a_vllm_target_names_its_missing_directory() -> None:
    (problem,) = semantic_problems(SemanticSettings(embedding="vllm:/models/e5"))
    assert problem.startswith("cache.semantic.embedding = vllm:/models/e5: no such directory")
    assert "give vllm:<the directory of a model vLLM can run as a pooling" in problem


@pytest.mark.parametrize("spec", ["", "local:/models/minilm", f"openai:{MODEL}"])
def test_accepted_forms(spec: str) -> None:
    assert semantic_problems(SemanticSettings(embedding=spec)) == []


def test_a_refused_request_is_an_error_without_the_key(
    emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-SECRET-key")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    embedder = _embedder(tmp_path)
    with pytest.raises(BatchdError) as err:
        embedder.embed(["anything"])
    assert "HTTP 401" in err.value.message and "SECRET" not in str(err.value)
    assert embedder.spend.calls == 0 and embedder.spend.cost_usd == 0


def test_an_embedder_that_may_not_buy_reads_the_cache_and_records_the_rest(
    endpoint: None, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    known = "How do I reset my password?"
    bought = _embedder(tmp_path).embed([known])  # in the result cache now, under its key
    calls = len(emulator.sync_calls)
    prices = load_price_book(Settings())
    reader = OpenAIEmbedder(MODEL, 1536, SqliteCache(tmp_path / "cache.db"), prices, buy=False)
    got = reader.embed([known, "Where is my invoice?", known, "Where is my invoice?"])
    assert len(emulator.sync_calls) == calls  # nothing sent
    np.testing.assert_array_equal(got[0], bought[0])
    np.testing.assert_array_equal(got[2], bought[0])
    assert np.isnan(got[[1, 3]]).all()  # no vector: a NaN row (never matched)
    assert list(reader.missing) == ["Where is my invoice?"]  # each missing text once
    assert reader.spend.texts == 0 and reader.spend.cost_usd == 0
    assert reader.key(known) == _embedder(tmp_path).key(known)
    assert reader.request_body(known) == {"model": MODEL, "input": known}
