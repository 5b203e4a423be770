"""The capability table: what a line asks for, which rows describe a target, the README copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.backends.capabilities import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    GEMINI_NATIVE,
    IMAGE_URLS,
    IMAGES,
    LOGPROBS,
    REASONING,
    RESPONSES,
    SEED,
    STRUCTURED,
    TOOLS,
    TOOLS_AUTO,
    VLLM_ROWS,
    N,
    _vllm_family,
    family_of,
    markdown_table,
    missing,
    needs,
)
from batchd.config.pricing import load_price_book
from batchd.config.settings import Settings
from batchd.requests import Request, parse_request

README = Path(__file__).resolve().parents[2] / "README.md"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}


def _req(**body: object) -> Request:
    line = {"custom_id": "a", "model": "gpt-4.1-mini", "prompt": "hi", **body}
    r = parse_request(line, 1, "t")
    assert isinstance(r, Request), r
    return r


def test_readme_table_is_the_modules_table() -> None:
    assert markdown_table() in README.read_text(encoding="utf-8")


def test_needs_reads_what_a_line_asks_for() -> None:
    assert needs(_req()) == {CHAT}
    assert needs(_req(response_format=SCHEMA)) == {CHAT, STRUCTURED}
    assert needs(_req(response_format={"type": "text"})) == {CHAT}
    assert needs(_req(tools=[TOOL])) == {CHAT, TOOLS, TOOLS_AUTO}  # auto is the default
    assert needs(_req(tools=[TOOL], tool_choice="required")) == {CHAT, TOOLS}
    named = {"type": "function", "function": {"name": "f"}}
    assert needs(_req(tools=[TOOL], tool_choice=named)) == {CHAT, TOOLS}
    assert needs(_req(n=1, logprobs=False)) == {CHAT}
    assert needs(_req(n=3, logprobs=True, seed=1, reasoning_effort="low")) == {
        CHAT,
        N,
        LOGPROBS,
        SEED,
        REASONING,
    }
    data = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    web = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    text = {"type": "text", "text": "what is this?"}
    msg = [{"role": "user", "content": [text, data]}]
    assert needs(_req(messages=msg)) == {CHAT, IMAGES}
    msg = [{"role": "user", "content": [text, web]}]
    assert needs(_req(messages=msg)) == {CHAT, IMAGES, IMAGE_URLS}


def test_needs_of_a_responses_body() -> None:
    body = {
        "model": "gpt-5.4-nano",
        "input": [
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y"}]}
        ],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}},
        "reasoning": {"effort": "low"},
    }
    r = Request(
        1, "a", "openai", "gpt-5.4-nano", "t", {}, True, None, body, b"k", endpoint=RESPONSES
    )
    assert needs(r) == {RESPONSES, IMAGES, IMAGE_URLS, STRUCTURED, REASONING}


@pytest.mark.parametrize(
    ("backend", "model", "can", "cannot"),
    [
        ("openai", "gpt-4.1-mini", {CHAT, RESPONSES, LOGPROBS, IMAGES, N}, {EMBEDDINGS, REASONING}),
        ("openai", "gpt-5.4-nano", {REASONING, IMAGES, STRUCTURED}, {LOGPROBS, COMPLETIONS}),
        ("openai", "o3-mini", {REASONING}, {LOGPROBS}),
        ("openai", "text-embedding-3-small", {EMBEDDINGS}, {CHAT, COMPLETIONS}),
        ("openai", "gpt-3.5-turbo-instruct", {COMPLETIONS, LOGPROBS}, {CHAT, EMBEDDINGS}),
        ("openai", "davinci-002", {COMPLETIONS}, {CHAT}),
        ("anthropic", "claude-sonnet-4-5", {CHAT, RESPONSES, STRUCTURED, IMAGE_URLS}, set()),
        ("anthropic", "claude-haiku-4-5", {REASONING}, {N, LOGPROBS, SEED, EMBEDDINGS}),
        (
            "gemini",
            "gemini-2.5-flash",
            {CHAT, STRUCTURED, TOOLS, IMAGES, SEED, GEMINI_NATIVE},
            set(),
        ),
        (
            "gemini",
            "models/gemini-2.5-pro",
            {IMAGES, RESPONSES},
            {IMAGE_URLS, N, LOGPROBS, COMPLETIONS},
        ),
        ("together", "meta-llama/x", {CHAT, LOGPROBS}, {EMBEDDINGS, GEMINI_NATIVE}),
    ],
)
def test_rows_per_model(backend: str, model: str, can: set[str], cannot: set[str]) -> None:
    f = family_of(backend, model, Settings())
    assert not missing(frozenset(can), f)
    assert set(missing(frozenset(cannot), f)) == cannot


def test_vllm_rows_follow_the_models_settings() -> None:
    plain = family_of("vllm", "tiny", Settings())  # no per-model settings: text generation
    assert plain == VLLM_ROWS[0]
    assert not missing(frozenset({CHAT, COMPLETIONS, RESPONSES, STRUCTURED, TOOLS, N}), plain)
    assert set(missing(frozenset({TOOLS_AUTO, IMAGES, EMBEDDINGS, REASONING}), plain)) == {
        TOOLS_AUTO,
        IMAGES,
        EMBEDDINGS,
        REASONING,
    }
    assert not missing(frozenset({TOOLS_AUTO}), _vllm_family(False, False, "hermes"))
    # a multimodal model takes images as data: URLs only (the worker fetches nothing)
    assert missing(frozenset({IMAGES, IMAGE_URLS}), _vllm_family(False, True, "")) == [IMAGE_URLS]
    embed = _vllm_family(True, True, "hermes")
    assert missing(frozenset({CHAT, EMBEDDINGS}), embed) == [CHAT]


def test_every_price_book_model_has_a_row() -> None:
    s = Settings()
    for p in load_price_book(s).models():
        f = family_of(p.vendor, p.model, s)
        assert f.backend == p.vendor, p.model
        assert f.serves, p.model
