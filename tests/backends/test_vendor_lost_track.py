"""A batch the vendor no longer knows (404) is a failed step, not a transient wait forever."""

from __future__ import annotations

import asyncio

import pytest

from batchd.backends.anthropic_batch import AnthropicBatchBackend
from batchd.backends.base import VendorLostTrack
from batchd.backends.openai_batch import OpenAIBatchBackend
from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings
from batchd.state.base import Chunk
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, API_KEY

CHUNK = Chunk(
    chunk_id="c",
    run_id="r",
    backend="openai",
    model="gpt-5.4-nano",
    path="c.jsonl",
    n_requests=1,
    n_bytes=1,
    vendor_batch_id="batch_does_not_exist",
)


def test_openai_unknown_batch(
    emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    backend = OpenAIBatchBackend(load_settings(environ={}).openai)
    with pytest.raises(VendorLostTrack, match="no longer knows"):
        asyncio.run(backend.poll(CHUNK))


def test_anthropic_unknown_batch(
    claude: AnthropicBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", claude.base_url)
    settings = load_settings(environ={})
    backend = AnthropicBatchBackend(settings.anthropic, load_price_book(settings))
    with pytest.raises(VendorLostTrack, match="no longer knows"):
        asyncio.run(backend.poll(CHUNK))
