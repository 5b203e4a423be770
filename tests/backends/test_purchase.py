"""The guarded create (backends.purchase) through the real SDKs against the emulators: the
guard runs before every try, a 429 is tried again after its Retry-After, a 5xx is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batchd.backends.anthropic_batch import AnthropicBatchBackend
from batchd.backends.base import TransientBackendError
from batchd.backends.openai_batch import OpenAIBatchBackend
from batchd.backends.purchase import retry_after_s
from batchd.config.pricing import load_price_book
from batchd.config.settings import load_settings
from batchd.state.base import Chunk, StaleLease
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, API_KEY, chat, write_jsonl


def _chunk(backend: str = "openai") -> Chunk:
    return Chunk(
        chunk_id="run-x-c00001",
        run_id="run-x",
        backend=backend,
        model="gpt-5.4-nano",
        path="c.jsonl",
        n_requests=2,
        n_bytes=1,
    )


@pytest.fixture
def openai_backend(
    emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> OpenAIBatchBackend:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    return OpenAIBatchBackend(load_settings(environ={}).openai)


def _data(tmp_path: Path) -> str:
    return str(write_jsonl(tmp_path / "c.jsonl", [chat("a", "x"), chat("b", "y")]))


class Guard:
    """Counts its calls; refuses (StaleLease) from call `refuse_from` on."""

    def __init__(self, refuse_from: int | None = None) -> None:
        self.calls = 0
        self.refuse_from = refuse_from

    def __call__(self) -> None:
        self.calls += 1
        if self.refuse_from is not None and self.calls >= self.refuse_from:
            raise StaleLease("lease lost")


def test_429s_are_tried_again_each_after_the_guard(
    emulator: OpenAIBatchEmulator, openai_backend: OpenAIBatchBackend, tmp_path: Path
) -> None:
    emulator.faults.rate_limit_creates = 2
    emulator.faults.create_retry_after_s = 0
    guard = Guard()
    ref = asyncio.run(openai_backend.create(_chunk(), _data(tmp_path), guard))
    assert guard.calls == 3  # before the two 429s and before the create that went through
    assert [b["id"] for b in emulator.batches()] == [ref.batch_id]


def test_a_guard_refusing_in_the_retry_wait_creates_nothing(
    emulator: OpenAIBatchEmulator, openai_backend: OpenAIBatchBackend, tmp_path: Path
) -> None:
    emulator.faults.rate_limit_creates = 1
    emulator.faults.create_retry_after_s = 0
    guard = Guard(refuse_from=2)  # the lease is lost while the create waits to try again
    with pytest.raises(StaleLease):
        asyncio.run(openai_backend.create(_chunk(), _data(tmp_path), guard))
    assert emulator.batches() == []


def test_a_5xx_is_not_sent_again_blindly(
    emulator: OpenAIBatchEmulator, openai_backend: OpenAIBatchBackend, tmp_path: Path
) -> None:
    emulator.faults.server_error_creates = 5
    with pytest.raises(TransientBackendError, match="500"):
        asyncio.run(openai_backend.create(_chunk(), _data(tmp_path), Guard()))
    assert emulator.faults.server_error_creates == 4  # one try: the caller reconciles first
    assert emulator.batches() == []


def test_anthropic_create_is_guarded_too(
    claude: AnthropicBatchEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", claude.base_url)
    settings = load_settings(environ={})
    backend = AnthropicBatchBackend(settings.anthropic, load_price_book(settings))
    line = b'{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":8,'
    line += b'"messages":[{"role":"user","content":"hi"}]}}\n'
    (tmp_path / "c.jsonl").write_bytes(line)
    claude.faults.rate_limit_creates = 1
    claude.faults.overloaded_creates = 1
    with pytest.raises(StaleLease):
        asyncio.run(backend.create(_chunk("anthropic"), str(tmp_path / "c.jsonl"), Guard(2)))
    assert claude.batches() == []
    guard = Guard()
    asyncio.run(backend.create(_chunk("anthropic"), str(tmp_path / "c.jsonl"), guard))
    assert guard.calls == 2 and len(claude.batches()) == 1  # the 529, then the create


def test_retry_after_headers() -> None:
    assert retry_after_s({"retry-after-ms": "50", "retry-after": "1"}, 0) == 0.05
    assert retry_after_s({"retry-after": "4"}, 0) == 4.0
    assert 0 < retry_after_s({"retry-after": "3600"}, 0) <= 0.5  # too long: backoff instead
    assert 0 < retry_after_s({"retry-after": "not a date"}, 3) <= 4.0
    assert 0 < retry_after_s({}, 10) <= 8.0
