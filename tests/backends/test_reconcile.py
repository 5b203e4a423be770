"""Backends reconcile only with batches that are provably the chunk's, and send creates once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anthropic
import openai
import pytest

from batchd.backends.anthropic_batch import AnthropicBatchBackend
from batchd.backends.base import OwnershipUnproven, TransientBackendError
from batchd.backends.openai_batch import OpenAIBatchBackend
from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings
from batchd.state.base import Chunk
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, API_KEY


def _chunk(backend: str, n: int = 2, run_id: str = "run-a") -> Chunk:
    return Chunk(
        chunk_id=f"{run_id}-c00001",
        run_id=run_id,
        backend=backend,
        model="gpt-5.4-nano" if backend == "openai" else "claude-sonnet-4-5",
        path="chunks/c.jsonl",
        n_requests=n,
        n_bytes=1,
        intent_at=time.time(),
    )


@pytest.fixture
def oai(emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenAIBatchBackend:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    return OpenAIBatchBackend(load_settings(environ={}).openai)


@pytest.fixture
def claude_backend(
    claude: AnthropicBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> AnthropicBatchBackend:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", claude.base_url)
    settings = load_settings(environ={})
    return AnthropicBatchBackend(settings.anthropic, load_price_book(settings))


def _openai_batch(emulator: OpenAIBatchEmulator, metadata: dict[str, str]) -> str:
    client = openai.OpenAI(api_key=API_KEY, base_url=emulator.base_url)
    line = (
        b'{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":'
        b'{"model":"gpt-5.4-nano","messages":[{"role":"user","content":"hi"}]}}\n'
    )
    file = client.files.create(file=("f.jsonl", line), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=metadata,
    )
    client.close()
    return batch.id


def test_openai_needs_this_run_and_chunk_in_metadata(
    oai: OpenAIBatchBackend, emulator: OpenAIBatchEmulator
) -> None:
    chunk = _chunk("openai")
    other_run = _openai_batch(emulator, {"batchd_run": "run-b", "batchd_chunk": chunk.chunk_id})
    no_run = _openai_batch(emulator, {"batchd_chunk": chunk.chunk_id})
    assert other_run and no_run
    assert asyncio.run(oai.find_existing(chunk, set(), lambda: set())) is None
    mine = _openai_batch(emulator, {"batchd_run": chunk.run_id, "batchd_chunk": chunk.chunk_id})
    ref = asyncio.run(oai.find_existing(chunk, set(), lambda: set()))
    assert ref is not None and ref.batch_id == mine
    assert asyncio.run(oai.find_existing(chunk, {mine}, lambda: set())) is None  # recorded


def test_anthropic_waits_on_an_unended_candidate_then_rules_it_out(
    claude_backend: AnthropicBatchBackend, claude: AnthropicBatchEmulator
) -> None:
    claude.set_step_mode(manual=True)
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=claude.base_url)
    params = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
    }
    foreign = client.messages.batches.create(
        requests=[{"custom_id": f"their-{i}", "params": params} for i in range(2)]
    ).id
    client.close()
    chunk = _chunk("anthropic")
    ids_read: list[int] = []

    def ids() -> set[str]:
        ids_read.append(1)
        return {"aa01", "aa02"}

    with pytest.raises(OwnershipUnproven) as unproven:
        asyncio.run(claude_backend.find_existing(chunk, set(), ids))
    assert unproven.value.batch_ids == [foreign] and ids_read == []  # nothing readable yet
    claude.advance_all()  # it ends: now its ids can be compared
    assert asyncio.run(claude_backend.find_existing(chunk, set(), ids)) is None
    assert ids_read == [1]
    assert asyncio.run(claude_backend.find_existing(chunk, set(), ids)) is None
    assert ids_read == [1]  # the verdict is kept: the foreign results are not read again
    assert next(b for b in claude.batches() if b["id"] == foreign)["cancel_initiated_at"] is None


def test_a_create_answering_500_is_not_repeated_by_the_sdk(
    claude_backend: AnthropicBatchBackend, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    data = tmp_path / "c.jsonl"
    data.write_text(
        '{"custom_id":"aa01","params":{"model":"claude-sonnet-4-5","max_tokens":5,'
        '"messages":[{"role":"user","content":"x"}]}}\n'
    )
    claude.faults.server_error_after_creates = 1
    with pytest.raises(TransientBackendError):
        asyncio.run(claude_backend.create(_chunk("anthropic", n=1), str(data), _no_lease))
    assert len(claude.batches()) == 1  # the one the vendor made; no blind second create
    claude.faults.rate_limit_creates = 2  # a 429 made nothing: sent again after Retry-After
    ref = asyncio.run(claude_backend.create(_chunk("anthropic", n=1), str(data), _no_lease))
    assert len(claude.batches()) == 2 and ref.batch_id == claude.batches()[-1]["id"]


def _no_lease() -> None:
    """The spend guard of embedded mode: no lease to check."""
