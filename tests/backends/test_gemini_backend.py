"""GeminiBatchBackend against the Gemini Batch emulator, through the real google-genai SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.backends.base import VendorLostTrack
from batchd.backends.gemini_batch import GeminiBatchBackend, job_state, parse_response
from batchd.config.settings import GeminiSettings
from batchd.errors import BatchdError
from batchd.requests import Request, parse_request
from batchd.state.base import Chunk
from tests.emulators.gemini_batch import GeminiBatchEmulator
from tests.support.helpers import GEMINI_KEY, chat

MODEL = "gemini-2.5-flash"


@pytest.fixture
def env(gemini: GeminiBatchEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.base_url)
    yield


def _chunk_file(backend: GeminiBatchBackend, tmp: Path, texts: list[str]) -> tuple[Chunk, str]:
    path = tmp / "chunk.jsonl"
    with open(path, "wb") as f:
        for i, text in enumerate(texts):
            req = parse_request(chat(f"u{i}", text, model=MODEL), i + 1, "default")
            assert isinstance(req, Request)
            f.write(backend.encode_line(f"v{i}", req) + b"\n")
    chunk = Chunk(
        chunk_id="run-x-c00001",
        run_id="run-x",
        backend="gemini",
        model=MODEL,
        path=str(path),
        n_requests=len(texts),
        n_bytes=path.stat().st_size,
    )
    return chunk, str(path)


async def _until_terminal(backend: GeminiBatchBackend, chunk: Chunk) -> Any:
    for _ in range(10):
        state = await backend.poll(chunk)
        if state.terminal:
            return state
    raise AssertionError("the batch never ended")


@pytest.mark.parametrize("inline_max_bytes", [19_000_000, 10])
def test_create_poll_results_inline_and_file(
    env: None, gemini: GeminiBatchEmulator, tmp_path: Path, inline_max_bytes: int
) -> None:
    backend = GeminiBatchBackend(GeminiSettings(inline_max_bytes=inline_max_bytes))
    texts = ["one", "two [[error:unavailable]]", "three", "[[error:invalid]]", "five"]
    chunk, path = _chunk_file(backend, tmp_path, texts)

    async def go() -> tuple[Any, dict[str, Any], Any]:
        ref = await backend.create(chunk, path, _no_lease)
        chunk.vendor_batch_id, chunk.vendor_file_id = ref.batch_id, ref.file_id
        state = await _until_terminal(backend, chunk)
        got = {vid: o async for vid, o in backend.results(chunk)}
        await backend.aclose()
        return ref, got, state

    ref, got, state = asyncio.run(go())
    assert gemini.inline_batches() == [inline_max_bytes > 10]
    assert (ref.file_id is None) == (inline_max_bytes > 10)
    assert (state.status, state.done, state.failed, state.total) == ("succeeded", 3, 2, 5)
    assert set(got) == {f"v{i}" for i in range(5)}
    assert got["v0"].output_text == "echo: one" and got["v4"].output_text == "echo: five"
    assert got["v1"].status == "failed" and got["v1"].retryable  # 503 UNAVAILABLE
    assert got["v3"].error_type == "invalid_argument" and not got["v3"].retryable
    assert gemini.batches()[0]["metadata"]["displayName"] == "batchd-run-x-c00001"


def test_find_existing_by_display_name(
    env: None, gemini: GeminiBatchEmulator, tmp_path: Path
) -> None:
    backend = GeminiBatchBackend(GeminiSettings())
    chunk, path = _chunk_file(backend, tmp_path, ["a", "b"])

    async def go() -> tuple[Any, Any, Any, Any]:
        before = await backend.find_existing(chunk, set(), _no_ids)
        ref = await backend.create(chunk, path, _no_lease)
        for i in range(120):  # other batches in the list: found across pages
            await backend.create(
                Chunk(
                    chunk_id=f"run-y-c{i:05d}",
                    run_id="run-y",
                    backend="gemini",
                    model=MODEL,
                    path=path,
                    n_requests=2,
                    n_bytes=1,
                ),
                path,
                _no_lease,
            )
        found = await backend.find_existing(chunk, set(), _no_ids)
        known = await backend.find_existing(chunk, {ref.batch_id}, _no_ids)
        await backend.aclose()
        return before, ref, found, known

    before, ref, found, known = asyncio.run(go())
    assert before is None
    assert found is not None and found.batch_id == ref.batch_id
    assert known is None  # a batch another chunk recorded is never this chunk's


def test_expired_batch_reports_what_ran_and_429s_are_retried(
    env: None, gemini: GeminiBatchEmulator, tmp_path: Path
) -> None:
    gemini.faults.expire_batches = 1
    gemini.faults.rate_limit_creates = 1
    gemini.faults.rate_limit_gets = 1
    backend = GeminiBatchBackend(GeminiSettings())
    chunk, path = _chunk_file(backend, tmp_path, ["a", "b", "c", "d"])

    async def go() -> tuple[Any, dict[str, Any]]:
        ref = await backend.create(chunk, path, _no_lease)
        chunk.vendor_batch_id = ref.batch_id
        state = await _until_terminal(backend, chunk)
        got = {vid: o async for vid, o in backend.results(chunk)}
        await backend.aclose()
        return state, got

    state, got = asyncio.run(go())
    assert len(gemini.batches()) == 1
    assert state.status == "expired" and state.done == 2 and state.total == 4
    assert len(got) == 2  # the rest are absent: batchd ends them `expired` (run/collect.py)


def test_cancel_and_lost_batch(env: None, gemini: GeminiBatchEmulator, tmp_path: Path) -> None:
    backend = GeminiBatchBackend(GeminiSettings())
    chunk, path = _chunk_file(backend, tmp_path, ["a", "b"])

    async def go() -> Any:
        ref = await backend.create(chunk, path, _no_lease)
        chunk.vendor_batch_id = ref.batch_id
        await backend.cancel(chunk)
        await backend.cancel(chunk)  # already ended: nothing to do, no error
        state = await backend.poll(chunk)
        chunk.vendor_batch_id = "batches/doesnotexist"
        with pytest.raises(VendorLostTrack):
            await backend.poll(chunk)
        await backend.aclose()
        return state

    state = asyncio.run(go())
    assert state.status == "cancelled" and state.terminal


def test_missing_or_refused_key_names_the_variable(
    gemini: GeminiBatchEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini.base_url)
    backend = GeminiBatchBackend(GeminiSettings())
    with pytest.raises(BatchdError, match="GEMINI_API_KEY"):
        _ = backend.client
    monkeypatch.setenv("GEMINI_API_KEY", "wrong-key")
    chunk, path = _chunk_file(backend, tmp_path, ["a"])

    async def go() -> None:
        try:
            await backend.create(chunk, path, _no_lease)
        finally:
            await backend.aclose()

    with pytest.raises(BatchdError, match="GEMINI_API_KEY") as err:
        asyncio.run(go())
    assert "wrong-key" not in str(err.value) + str(err.value.hint)


def test_parse_response_usage_and_finish_reasons() -> None:
    ok = parse_response(
        {
            "response": {
                "candidates": [
                    {
                        "content": {
                            "parts": [{"text": "thinking...", "thought": True}, {"text": "hi"}],
                            "role": "model",
                        },
                        "finishReason": "MAX_TOKENS",
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 100,
                    "cachedContentTokenCount": 60,
                    "candidatesTokenCount": 7,
                    "thoughtsTokenCount": 5,
                },
                "modelVersion": "gemini-2.5-flash-001",
                "responseId": "resp-123",
            }
        },
        MODEL,
    )
    assert ok.reasoning_tokens == 5 and ok.request_id == "resp-123" and ok.tool_calls is None
    assert (ok.status, ok.output_text, ok.finish_reason) == ("succeeded", "hi", "length")
    assert (ok.input_tokens, ok.cached_input_tokens, ok.output_tokens) == (100, 60, 12)
    assert ok.model_used == "gemini-2.5-flash-001"
    reasons = {"STOP": "stop", "SAFETY": "content_filter", "RECITATION": "content_filter"}
    for vendor, openai in reasons.items():
        o = parse_response(
            {
                "response": {
                    "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": vendor}]
                }
            },
            MODEL,
        )
        assert o.finish_reason == openai
    call = parse_response(
        {
            "response": {
                "candidates": [
                    {
                        "content": {
                            "parts": [
                                {"text": "calling"},
                                {"functionCall": {"name": "f", "args": {"city": "Oslo"}}},
                                {"functionCall": {"id": "g1", "name": "g", "args": {}}},
                            ]
                        },
                        "finishReason": "STOP",
                    }
                ]
            }
        },
        MODEL,
    )
    assert call.finish_reason == "tool_calls" and call.output_text == "calling"
    assert call.tool_calls is not None
    assert json.loads(call.tool_calls) == [  # the common column: OpenAI's shape
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "f", "arguments": '{"city":"Oslo"}'},
        },
        {"id": "g1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    blocked = parse_response({"response": {"promptFeedback": {"blockReason": "SAFETY"}}}, MODEL)
    assert blocked.status == "failed" and blocked.error_type == "content_filter"


def test_job_states_from_the_api_and_the_sdk() -> None:
    assert job_state("BATCH_STATE_RUNNING") == "running"
    assert job_state("JOB_STATE_SUCCEEDED") == "succeeded"
    assert job_state("BATCH_STATE_CANCELLED") == "cancelled"
    assert job_state("BATCH_STATE_EXPIRED") == "expired"
    assert job_state(None) == "unknown"


def _no_lease() -> None:
    """The spend guard of embedded mode: no lease to check."""


def _no_ids() -> set[str]:
    raise AssertionError("Gemini proves ownership by display_name, not by request ids")
